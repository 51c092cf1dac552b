"""Attention implementation for backbones run with a 4-D bidirectional mask (A2D, native Dream/LLaDA).

FlashAttention kernels take no 4-D additive mask: transformers then runs them causally (or only with
padding), so a folder whose ``config.json`` asks for ``flash_attention_2`` / ``flash_attention_3`` (or any
kernel other than sdpa/eager) would silently train a causal model. :func:`bidirectional_attn_implementation`
returns the implementation to load such a backbone with: the folder's own when it is ``sdpa`` or
``eager``, else ``sdpa`` with a warning that names the folder and the field.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["MASKED_ATTENTION", "bidirectional_attn_implementation"]

#: implementations that honour a 4-D additive attention mask
MASKED_ATTENTION = ("sdpa", "eager")


def bidirectional_attn_implementation(raw: dict[str, Any], folder: str | Path) -> str | None:
    """``attn_implementation`` for a backbone that needs a 4-D bidirectional mask (None: transformers' default, sdpa)."""
    for key in ("attn_implementation", "_attn_implementation"):
        asked = raw.get(key)
        if asked is None or asked in MASKED_ATTENTION:
            continue
        warnings.warn(
            f"{folder}/config.json sets {key}: {asked!r}, which cannot take the 4-D bidirectional mask a masked-diffusion "
            "model needs (it would attend causally); loading it with attn_implementation='sdpa' instead",
            stacklevel=3,
        )
        return "sdpa"
    return next((raw[k] for k in ("attn_implementation", "_attn_implementation") if raw.get(k)), None)
