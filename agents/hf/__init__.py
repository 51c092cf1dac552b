"""Trainable Hugging Face masked-diffusion backbones (:class:`HFDiffusionPolicy`: A2D, LLaDA-style, Dream-style).

Exports are lazy: ``HFDiffusionPolicy``, ``HFDenoiser`` (:mod:`agents.hf.policy`).
"""

from __future__ import annotations

from lavida_envs._lazy import lazy_getattr

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {"HFDiffusionPolicy": "agents.hf.policy", "HFDenoiser": "agents.hf.policy"}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
