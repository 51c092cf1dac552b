"""The unified masked-diffusion agent: tokenizer, image codec, model, sampler, likelihood, policy.

Exports are lazy (``from agents.diffusion import DiffusionPolicy`` loads only what it needs).
"""

from __future__ import annotations

from lavida_envs._lazy import lazy_getattr

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)
