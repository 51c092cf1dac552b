"""Tiny random Hugging Face models built offline for adapter and TRL tests (no downloads).

* :func:`build_tokenizer` -- a byte-level BPE trained in memory with the ``tokenizers``
  library, wrapped in ``PreTrainedTokenizerFast`` (``<pad>``, ``<s>``, ``</s>``, ``<image>``,
  ``<mask>``; optionally a tiny chat template).
* :func:`save_tiny_causal_lm`, :func:`save_tiny_vlm` (LLaVA: CLIP vision tower + Llama, PIL
  image processor), :func:`save_tiny_qwen2_vl` (Qwen2-VL, whose processor wants torchvision),
  :func:`save_tiny_masked_lm` (BERT masked LM) write a model and its
  tokenizer/processor to a directory and return the path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<image>", "<mask>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)
_CORPUS = [
    "Think step by step inside <think></think>, then give the final answer inside <answer></answer>.",
    "Give its bounding box as [x1, y1, x2, y2] in pixel coordinates of this image.",
    "Edit the image as instructed: recolor the red circle to blue.",
    "What is the value of the sum shown in the picture? 0 1 2 3 4 5 6 7 8 9 A) B) C) D)",
]


def build_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A ~300-token byte-level BPE tokenizer (every string encodes; no unknown tokens)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        mask_token="<mask>",
        extra_special_tokens={"image_token": "<image>"},
    )
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def _llama_config(tok: PreTrainedTokenizerFast, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kw,
    )


def save_tiny_causal_lm(path: str | Path, chat_template: bool = True, seed: int = 0) -> Path:
    """A 1-layer random Llama causal LM + tokenizer saved to ``path``."""
    from transformers import LlamaForCausalLM

    tok = build_tokenizer(chat_template)
    torch.manual_seed(seed)
    LlamaForCausalLM(_llama_config(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


def save_tiny_vlm(path: str | Path, seed: int = 0) -> Path:
    """A random LLaVA (1-layer CLIP vision tower on 16x16 images + 1-layer Llama) + processor."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = build_tokenizer(chat_template=True)
    images = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(
        image_processor=images, tokenizer=tok, patch_size=4, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=16, patch_size=4, projection_dim=16,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=_llama_config(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return Path(path)


def save_tiny_qwen2_vl(path: str | Path, seed: int = 0) -> Path:
    """A random Qwen2-VL (1-layer vision tower on <= 32x32 images + 1-layer text model) + its files.

    Written file by file (tokenizer, PIL image processor, ``processor_config.json`` naming
    ``Qwen2VLProcessor``), because building a ``Qwen2VLProcessor`` object needs torchvision for
    its video processor; loading the folder is what the adapter has to get right.
    """
    import json

    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(chat_template=True)
    vision_tokens = ["<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]  # images use the tokenizer's <image>
    tok.add_special_tokens({"additional_special_tokens": vision_tokens})
    tok.save_pretrained(folder)
    images = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=32 * 32, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    images.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    ids = {name: tok.convert_tokens_to_ids(name) for name in ["<image>", *vision_tokens]}
    text = dict(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    vision = dict(
        depth=1, embed_dim=16, hidden_size=16, num_heads=2, patch_size=4, spatial_merge_size=2,
        temporal_patch_size=2, in_channels=3, mlp_ratio=2,
    )
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<image>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    return folder


def save_tiny_masked_lm(path: str | Path, seed: int = 0, mask_in_config: bool = True) -> Path:
    """A 1-layer random BERT masked LM (bidirectional denoiser) + tokenizer saved to ``path``."""
    from transformers import BertConfig, BertForMaskedLM

    tok = build_tokenizer(chat_template=False)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
    )
    if mask_in_config:
        config.mask_token_id = tok.mask_token_id
    torch.manual_seed(seed)
    BertForMaskedLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


_REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class TinyDLMConfig(PretrainedConfig):
    model_type = "tiny_dlm"

    def __init__(self, vocab_size=300, hidden_size=16, mask_token_id=None, max_position_embeddings=1024, **kw):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.mask_token_id, self.max_position_embeddings = mask_token_id, max_position_embeddings
        super().__init__(**kw)
'''
_REMOTE_MODEL = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tiny_dlm import TinyDLMConfig


class TinyDLM(PreTrainedModel):
    """LLaDA-shaped remote code: bidirectional mixing, logits predict the token at each position."""

    config_class = TinyDLMConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.mix = torch.nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        h = self.embed(input_ids)
        ctx = h.mean(dim=1, keepdim=True).expand_as(h)
        return MaskedLMOutput(logits=self.head(torch.tanh(self.mix(torch.cat([h, ctx], dim=-1)))))
'''


def save_tiny_remote_dllm(
    path: str | Path, seed: int = 0, causal_auto_map: bool = False, mask_in_config: bool = True
) -> Path:
    """A LLaDA-style remote-code checkpoint (``auto_map`` -> ``AutoModel``) with mask id in its config.

    ``causal_auto_map`` also maps ``AutoModelForCausalLM`` to the model (as LLaDA's config does,
    although the model has no ``generate``); ``mask_in_config=False`` leaves ``mask_token_id`` out.
    """
    import json

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny_dlm.py").write_text(_REMOTE_CONFIG)
    (folder / "modeling_tiny_dlm.py").write_text(_REMOTE_MODEL)
    tok = build_tokenizer(chat_template=True)
    tok.save_pretrained(folder)
    config = {
        "model_type": "tiny_dlm", "vocab_size": len(tok), "hidden_size": 16,
        "mask_token_id": tok.mask_token_id, "max_position_embeddings": 1024,
        "eos_token_id": tok.eos_token_id,
        "auto_map": {"AutoConfig": "configuration_tiny_dlm.TinyDLMConfig", "AutoModel": "modeling_tiny_dlm.TinyDLM"},
    }
    if causal_auto_map:
        config["auto_map"]["AutoModelForCausalLM"] = "modeling_tiny_dlm.TinyDLM"
    if not mask_in_config:
        del config["mask_token_id"]
    (folder / "config.json").write_text(json.dumps(config))
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(folder, trust_remote_code=True), trust_remote_code=True)
    model.save_pretrained(folder)
    return folder
