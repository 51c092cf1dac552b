"""Native LLaDA (``model_type: llada``: LLaDA-8B-Base/Instruct, LLaDA-1.5): no remote code, the published files as they are.

LLaDA's published ``modeling_llada.py`` (an OLMo fork) with ``block_type: llama`` computes exactly a
Llama decoder run bidirectionally: RMSNorm (fp32, then the weight), RoPE on absolute positions with
``rope_theta``, sdpa attention with grouped K/V heads repeated per query group, a SwiGLU MLP
``ff_out(silu(ff_proj(x)) * up_proj(x))``, a final norm and an output projection (or the tied
embedding when ``weight_tying``). So :class:`LLaDAModelLM` *is* transformers'
``LlamaForCausalLM`` (sdpa attention; :class:`agents.hf.denoiser.HFDenoiserBase` gives it the 4-D
bidirectional mask, the positions and the KV cache), built from LLaDA's own config keys and loading
its safetensors by their own names:

====================================================  ==============================================
published name                                        module
====================================================  ==============================================
``model.transformer.wte.weight``                      ``model.embed_tokens.weight``
``model.transformer.blocks.N.{q,k,v}_proj.weight``    ``model.layers.N.self_attn.{q,k,v}_proj.weight``
``model.transformer.blocks.N.attn_out.weight``        ``model.layers.N.self_attn.o_proj.weight``
``model.transformer.blocks.N.ff_proj.weight``         ``model.layers.N.mlp.gate_proj.weight``
``model.transformer.blocks.N.up_proj.weight``         ``model.layers.N.mlp.up_proj.weight``
``model.transformer.blocks.N.ff_out.weight``          ``model.layers.N.mlp.down_proj.weight``
``model.transformer.blocks.N.attn_norm.weight``       ``model.layers.N.input_layernorm.weight``
``model.transformer.blocks.N.ff_norm.weight``         ``model.layers.N.post_attention_layernorm.weight``
``model.transformer.ln_f.weight``                     ``model.norm.weight``
``model.transformer.ff_out.weight`` (untied)          ``lm_head.weight``
====================================================  ==============================================

Config keys read (missing ones take the published ``ModelConfig`` defaults): ``d_model``,
``n_heads``, ``n_kv_heads``, ``n_layers``, ``mlp_hidden_size`` (else ``mlp_ratio * d_model``),
``vocab_size``, ``embedding_size`` (>= ``vocab_size``; the logits' width), ``rope_theta``,
``rms_norm_eps``, ``max_sequence_length``, ``weight_tying``, ``mask_token_id``. Options the
published code has but LLaDA's checkpoints do not use (other block types, biases, QK norms, ALiBi,
logit scaling, ...) are refused with the field and its value. :meth:`LLaDAModelLM.save_pretrained`
writes the same ``config.json`` keys and weight names, so the published code loads a checkpoint.
Positions count attended tokens (left padding changes nothing); on unpadded rows they are LLaDA's.
The equality with the published code is tested on fixtures it wrote (``scripts/make_native_fixtures.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

__all__ = [
    "LLaDAModelLM", "check_published", "is_llada", "llama_config", "load_safetensors", "published_names", "read_config",
    "write_published",
]  # fmt: skip

#: the published ModelConfig defaults of the keys read here
DEFAULTS: dict[str, Any] = {
    "d_model": 768, "n_heads": 12, "n_kv_heads": None, "n_layers": 12, "mlp_ratio": 4, "mlp_hidden_size": None,
    "activation_type": "swiglu", "block_type": "sequential", "block_group_size": 1, "alibi": False, "rope": False,
    "attention_layer_norm": False, "multi_query_attention": None, "input_emb_norm": False, "layer_norm_type": "default",
    "layer_norm_with_affine": True, "rms_norm_eps": 1e-5, "max_sequence_length": 1024, "rope_theta": 10000.0,
    "include_qkv_bias": False, "include_bias": False, "bias_for_layer_norm": None, "scale_logits": False,
    "vocab_size": 50257, "embedding_size": 50304, "weight_tying": True, "mask_token_id": 50256,
}  # fmt: skip
#: published option -> the only value the Llama-equivalent computation has
REQUIRED: dict[str, Any] = {
    "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms", "rope": True, "alibi": False,
    "attention_layer_norm": False, "input_emb_norm": False, "include_bias": False, "include_qkv_bias": False,
    "scale_logits": False, "block_group_size": 1, "layer_norm_with_affine": True,
}  # fmt: skip
#: block-level published suffix -> Llama decoder-layer suffix
BLOCK_KEYS: dict[str, str] = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
}  # fmt: skip
TOP_KEYS: dict[str, str] = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}
_BLOCK = re.compile(r"^model\.transformer\.blocks\.(\d+)\.(\w+)\.weight$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")


def is_llada(raw: dict[str, Any]) -> bool:
    """Whether a raw ``config.json`` is LLaDA's (``model_type`` ``llada``: loaded natively, never by its remote code)."""
    return str(raw.get("model_type", "")).lower() == "llada"


def _settings(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The published config's values of :data:`DEFAULTS` (checked: supported options, sizes)."""
    cfg = {key: raw.get(key, default) for key, default in DEFAULTS.items()}
    for key, want in REQUIRED.items():
        got = cfg[key]
        if (str(got) if isinstance(want, str) else got) != want:
            raise ValueError(f"{where}: LLaDA config {key}={got!r} is not supported natively (only {want!r}, as the "
                             f"published LLaDA checkpoints have); set {key}: {json.dumps(want)} or use another model")  # fmt: skip
    if cfg["bias_for_layer_norm"]:
        raise ValueError(f"{where}: LLaDA config bias_for_layer_norm={cfg['bias_for_layer_norm']!r} is not supported natively")
    for key in ("d_model", "n_heads", "n_layers", "vocab_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{where}: LLaDA config {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["d_model"] % cfg["n_heads"]:
        raise ValueError(f"{where}: LLaDA config d_model={cfg['d_model']} is not a multiple of n_heads={cfg['n_heads']}")
    kv = cfg["n_kv_heads"] if cfg["n_kv_heads"] is not None else (1 if cfg["multi_query_attention"] else cfg["n_heads"])
    if not isinstance(kv, int) or kv < 1 or cfg["n_heads"] % kv:
        raise ValueError(f"{where}: LLaDA config n_kv_heads={kv!r} must divide n_heads={cfg['n_heads']}")
    cfg["n_kv_heads"] = kv
    embedding = cfg["embedding_size"] or cfg["vocab_size"]
    if embedding < cfg["vocab_size"]:
        raise ValueError(f"{where}: LLaDA config embedding_size={embedding} is below vocab_size={cfg['vocab_size']}; "
                         "it must be at least vocab_size")  # fmt: skip
    cfg["embedding_size"] = embedding
    cfg["mlp_hidden_size"] = cfg["mlp_hidden_size"] or cfg["mlp_ratio"] * cfg["d_model"]
    return cfg


def llama_config(raw: dict[str, Any], where: str = "config.json") -> LlamaConfig:
    """The ``LlamaConfig`` (sdpa attention, no padding index) computing what the published LLaDA config describes."""
    cfg = _settings(raw, where)
    config = LlamaConfig(
        vocab_size=cfg["embedding_size"], hidden_size=cfg["d_model"], intermediate_size=cfg["mlp_hidden_size"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
        max_position_embeddings=cfg["max_sequence_length"], rms_norm_eps=cfg["rms_norm_eps"], rope_theta=float(cfg["rope_theta"]),
        tie_word_embeddings=bool(cfg["weight_tying"]), attention_bias=False, mlp_bias=False, hidden_act="silu",
        pad_token_id=None, bos_token_id=None, eos_token_id=raw.get("eos_token_id"), attn_implementation="sdpa",
    )  # fmt: skip
    config.mask_token_id = cfg["mask_token_id"]
    return config


def published_names(module_names: list[str], tied: bool) -> dict[str, str]:
    """module parameter name -> published LLaDA name (tied: ``lm_head.weight`` is not saved: it is ``wte``)."""
    inverse_top = {v: k for k, v in TOP_KEYS.items()}
    inverse_block = {v: k for k, v in BLOCK_KEYS.items()}
    out = {}
    for name in module_names:
        if name in inverse_top:
            if not (tied and name == "lm_head.weight"):
                out[name] = inverse_top[name]
            continue
        match = _LAYER.match(name)
        if not match or match.group(2) not in inverse_block:
            raise ValueError(f"parameter {name!r} has no name in LLaDA's published layout")
        out[name] = f"model.transformer.blocks.{match.group(1)}.{inverse_block[match.group(2)]}.weight"
    return out


def load_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or the shards its ``model.safetensors.index.json`` lists."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"{index}: not a safetensors index with a weight_map ({exc})") from None
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{str(folder)!r} has no model.safetensors (or model.safetensors.index.json); native "
                                "loading reads safetensors only: convert .bin weights with safetensors first")  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise FileNotFoundError(f"{index}: lists weight file {name!r}, which is not in {str(folder)!r}")
        tensors.update(load_file(str(path)))
    return tensors


def read_config(folder: Path, model: str) -> tuple[dict[str, Any], str]:
    """``(config.json as a dict, its path)`` of a native ``model`` folder (ValueError naming the file if unreadable)."""
    where = str(folder / "config.json")
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read the {model} config ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: the {model} config is not a JSON object")
    return raw, where


def check_published(folder: Path, what: str, expected: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Raise naming ``folder`` when its safetensors miss or add names of ``expected`` (name -> shape) or a shape differs."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{str(folder)!r}: the safetensors do not match its {what} config: missing {missing[:4]}"
                         f"{'...' if len(missing) > 4 else ''}, unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}")  # fmt: skip
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError(f"{str(folder)!r}: weight {name} has shape {tuple(tensors[name].shape)} but the config "
                             f"gives {tuple(shape)}")  # fmt: skip


def write_published(folder: str | Path, tensors: dict[str, torch.Tensor], raw: dict[str, Any]) -> None:
    """``folder/model.safetensors`` (``tensors`` under their published names) and ``folder/config.json`` (``raw``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _rebuild_meta_buffers(model: nn.Module) -> None:
    """Modules whose (non-persistent) buffers are still on the meta device (RoPE tables) built again on CPU."""
    for name, module in list(model.named_modules()):
        if name and any(b.is_meta for b in module.buffers(recurse=False)):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, type(module)(config=model.config))


class LLaDAModelLM(LlamaForCausalLM):
    """LLaDA as transformers' ``LlamaForCausalLM``, loaded from and saved to the published LLaDA layout (module docstring)."""

    #: the published ``config.json`` as read (written back by :meth:`save_pretrained`)
    published_config: dict[str, Any]

    @classmethod
    def from_published(cls, folder: str | Path, dtype: torch.dtype | str | None = None) -> LLaDAModelLM:
        """The model of a LLaDA folder (``config.json`` + safetensors under LLaDA's names); ``dtype``: else the weights'."""
        folder = Path(folder)
        raw, where = read_config(folder, "LLaDA")
        config = llama_config(raw, where)
        tensors = load_safetensors(folder)
        with torch.device("meta"):
            model = cls(config)
        names = published_names([n for n, _ in model.named_parameters()], config.tie_word_embeddings)
        if config.tie_word_embeddings:  # the published code's ff_out aliases wte: either name may be the one saved
            alias = tensors.pop("model.transformer.ff_out.weight", None)
            if alias is not None:
                tensors.setdefault("model.transformer.wte.weight", alias)
        check_published(folder, "LLaDA", {p: model.get_parameter(m).shape for m, p in names.items()}, tensors)
        target = _dtype(dtype) or tensors["model.transformer.wte.weight"].dtype
        state = {}
        for module_name, published in names.items():
            state[module_name] = tensors[published].to(target)
        model.load_state_dict(state, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        _rebuild_meta_buffers(model)
        model.published_config = dict(raw)
        return model.eval()

    def save_pretrained(self, save_directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None, **_: Any) -> None:
        """``config.json`` with the published LLaDA keys and ``model.safetensors`` under the published weight names."""
        state = self.state_dict() if state_dict is None else state_dict
        names = published_names([n for n in state if n.endswith(".weight")], self.config.tie_word_embeddings)
        tensors = {published: state[name].detach().contiguous().cpu() for name, published in names.items()}
        raw = dict(getattr(self, "published_config", {}) or {})
        raw["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
        raw.setdefault("model_type", "llada")
        write_published(save_directory, tensors, raw)



def _dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    resolved = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {value!r} (e.g. float32, bfloat16)")
    return resolved
