"""Tiny remote-code masked-diffusion checkpoints built offline (no downloads) for the trainable HF backbones.

* :func:`save_llada_like` -- a LLaDA-shaped folder: ``auto_map`` -> ``AutoModel``, a 2-layer
  bidirectional transformer with learned positions whose logits at ``i`` predict token ``i``,
  ``mask_token_id`` in its config (``model_type`` ``tiny_llada``).
* :func:`save_dream_like` -- the same network (``model_type`` ``tiny_dream``, remote code) whose
  logits are shifted by one (position ``i`` predicts token ``i + 1``), as Dream's: ``hf-dream:``.
* :func:`save_qwen2` -- a small random Qwen2 causal LM for A2D (2 layers unless told).
* :func:`save_dream` -- a random checkpoint in Dream's published layout (the equality fixture's
  ``config.json`` keys, Qwen2 weight names), loaded natively by ``hf-dllm:`` (no remote code).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tiny_hf import build_tokenizer

_CONFIG = '''
from transformers import PretrainedConfig


class TinyBidiConfig(PretrainedConfig):
    model_type = "{model_type}"

    def __init__(self, vocab_size=300, hidden_size=32, num_layers=2, mask_token_id=None, shifted=False,
                 max_position_embeddings=512, **kw):
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.mask_token_id, self.shifted, self.max_position_embeddings = mask_token_id, shifted, max_position_embeddings
        super().__init__(**kw)
'''
_MODEL = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tiny_bidi import TinyBidiConfig


class TinyBidi(PreTrainedModel):
    """Bidirectional transformer denoiser; with config.shifted, logits at i predict token i + 1 (Dream)."""

    config_class = TinyBidiConfig

    def __init__(self, config):
        super().__init__(config)
        d = config.hidden_size
        self.embed = torch.nn.Embedding(config.vocab_size, d)
        self.pos = torch.nn.Embedding(config.max_position_embeddings, d)
        layer = torch.nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        pad = None if attention_mask is None else attention_mask == 0
        h = self.encoder(self.embed(input_ids) + self.pos(positions), src_key_padding_mask=pad)
        logits = self.head(h)
        if self.config.shifted:
            logits = torch.cat([logits[:, 1:], logits[:, -1:]], 1)
        return MaskedLMOutput(logits=logits)
'''


def _save_remote(path: str | Path, model_type: str, shifted: bool, seed: int) -> Path:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny_bidi.py").write_text(_CONFIG.format(model_type=model_type))
    (folder / "modeling_tiny_bidi.py").write_text(_MODEL)
    tok = build_tokenizer(chat_template=True)
    tok.save_pretrained(folder)
    config = {
        "model_type": model_type, "vocab_size": len(tok), "hidden_size": 32, "num_layers": 2,
        "mask_token_id": tok.mask_token_id, "shifted": shifted, "eos_token_id": tok.eos_token_id,
        "auto_map": {"AutoConfig": "configuration_tiny_bidi.TinyBidiConfig", "AutoModel": "modeling_tiny_bidi.TinyBidi"},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(folder, trust_remote_code=True), trust_remote_code=True)
    model.save_pretrained(folder)
    return folder


def save_llada_like(path: str | Path, seed: int = 0) -> Path:
    """A LLaDA-style remote-code folder (logits at i predict token i)."""
    return _save_remote(path, "tiny_llada", False, seed)


def save_dream_like(path: str | Path, seed: int = 0) -> Path:
    """A Dream-style remote-code folder (logits shifted by one; not ``model_type`` Dream, which loads natively)."""
    return _save_remote(path, "tiny_dream", True, seed)


def save_qwen2(path: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2, tied: bool = False) -> Path:
    """A random Qwen2 causal LM (``layers`` layers, default 2; ``tied`` embeddings as Qwen2.5-0.5B) + tokenizer
    (no chat template) for A2D."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(chat_template=False)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


DREAM_FIXTURE = Path(__file__).parent / "fixtures" / "native" / "dream"


def save_dream(path: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random Dream checkpoint (``model_type`` Dream, the fixture's config keys) + the test tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(chat_template=True)
    raw = json.loads((DREAM_FIXTURE / "config.json").read_text())
    raw.update(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
               mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    config = Qwen2Config(**{k: raw[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                 "num_attention_heads", "num_key_value_heads", "rope_theta")})  # fmt: skip
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    (Path(path) / "config.json").write_text(json.dumps(raw))
    tok.save_pretrained(path)
    return Path(path)
