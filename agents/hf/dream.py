"""Native Dream (``model_type: Dream``: Dream-v0-Base-7B / Dream-v0-Instruct-7B) without its remote code.

Dream's published network is a Qwen2 decoder (q/k/v projections with bias, o without, SwiGLU MLP,
RMSNorm, RoPE) run with full bidirectional attention, whose logits at ``i`` predict token ``i + 1``.
Its safetensors use Qwen2's key names (``model.embed_tokens``, ``model.layers.N.self_attn.q_proj``,
..., ``model.norm``, ``lm_head``), so transformers' own ``Qwen2ForCausalLM`` holds them as they are:
:func:`load_dream` builds one from the Dream ``config.json`` (:func:`qwen2_config`) and loads the
weights by name, refusing missing or unexpected keys. :class:`agents.hf.policy.HFDenoiser` runs it
with a 4-D bidirectional mask (never a causal one; sdpa/eager attention, :mod:`agents.hf.attention`)
and shifts the logits back. :func:`write_dream_config` saves checkpoints in Dream's layout again
(its ``config.json`` keys, the same weight names), so Dream's published code still loads them.
Equality with the published code: tests/test_native_dream.py (fixture from scripts/make_native_fixtures.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["is_dream", "load_dream", "qwen2_config", "write_dream_config"]

#: Dream config.json keys that a Qwen2Config takes as they are
_QWEN2_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
               "rope_theta", "rope_scaling", "attention_dropout", "tie_word_embeddings", "pad_token_id",
               "bos_token_id", "eos_token_id")  # fmt: skip
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def is_dream(raw: dict[str, Any]) -> bool:
    """Whether a raw ``config.json`` is Dream's (``model_type`` ``Dream``, any case)."""
    return str(raw.get("model_type", "")).lower() == "dream"


def qwen2_config(raw: dict[str, Any], folder: Path, attn_implementation: str | None = None) -> Any:
    """The ``Qwen2Config`` of Dream's ``config.json`` ``raw`` (ValueError naming a missing or unusable field)."""
    from transformers import Qwen2Config

    missing = [k for k in _REQUIRED if raw.get(k) is None]
    if missing:
        raise ValueError(f"{folder}/config.json (model_type Dream) lacks {missing}; it is not a Dream checkpoint's config")
    if raw.get("use_sliding_window"):
        raise ValueError(f"{folder}/config.json sets use_sliding_window: true; native Dream runs full attention only")
    kw = {k: raw[k] for k in _QWEN2_KEYS if raw.get(k) is not None}
    kw.setdefault("num_key_value_heads", raw["num_attention_heads"])
    kw.setdefault("tie_word_embeddings", False)
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise ValueError(f"{folder}/config.json: hidden_size {raw['hidden_size']} is not a multiple of "
                         f"num_attention_heads {raw['num_attention_heads']}")  # fmt: skip
    return Qwen2Config(**kw, use_sliding_window=False, use_cache=False, attn_implementation=attn_implementation or "sdpa")


def load_dream(folder: Path, raw: dict[str, Any], dtype: Any = None) -> nn.Module:
    """Dream's weights in a ``Qwen2ForCausalLM`` (by their published key names; ValueError on missing/extra keys)."""
    from transformers import Qwen2ForCausalLM

    from agents.hf.attention import bidirectional_attn_implementation

    config = qwen2_config(raw, folder, bidirectional_attn_implementation(raw, folder))
    extra = {"dtype": dtype} if dtype is not None else {}
    model, info = Qwen2ForCausalLM.from_pretrained(str(folder), config=config, local_files_only=True,
                                                   output_loading_info=True, **extra)  # fmt: skip
    bad = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise ValueError(f"{folder}: the weights do not match Dream's layout (model.layers.N.self_attn.q_proj, "
                         f"lm_head, ...): {bad}")  # fmt: skip
    return model


def write_dream_config(backbone: nn.Module, raw: dict[str, Any], path: str | Path, dtype: Any = None) -> None:
    """Rewrite ``path/config.json`` (written by ``save_pretrained`` as Qwen2) in Dream's layout: ``raw``'s keys,
    with the saved vocabulary size and dtype (``dtype``, else the backbone's)."""
    base = backbone.get_base_model() if callable(getattr(backbone, "get_base_model", None)) else backbone  # peft
    out = dict(raw)
    from agents.hf.denoiser import embedding_rows

    out["vocab_size"] = embedding_rows(base)  # config.vocab_size: a ZeRO-3 weight has shape 0
    dtype_key = "dtype" if "dtype" in raw and "torch_dtype" not in raw else "torch_dtype"
    out[dtype_key] = str(dtype or next(base.parameters()).dtype).removeprefix("torch.")
    (Path(path) / "config.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
