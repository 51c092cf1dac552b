"""The unified masked-diffusion agent: tokenizer, image codec, model, sampler, likelihood, policy.

Exports are lazy (``from agents.diffusion import DiffusionPolicy`` loads only what it needs).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "DecodingConfig": "agents.diffusion.policy",
    "DiffusionConfig": "agents.diffusion.model",
    "DiffusionModel": "agents.diffusion.model",
    "DiffusionPolicy": "agents.diffusion.policy",
    "ImageCodec": "agents.diffusion.codec",
    "PaletteCodec": "agents.diffusion.codec",
    "build_tokenizer": "agents.diffusion.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents.diffusion' has no attribute {name!r}")
