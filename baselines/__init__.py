"""Baselines: simple policies, Hugging Face adapters and policy specs (DESIGN section 4).

Exports are lazy, so ``import baselines`` stays cheap (torch/transformers load on first use):
``RandomPolicy``, ``ConstantPolicy``, ``OraclePolicy`` (:mod:`baselines.simple`),
``HFCausalLMPolicy``, ``HFVLMPolicy``, ``HFDiffusionLMPolicy`` (:mod:`baselines.hf`) and
``resolve_policy`` (:mod:`baselines.specs`).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "RandomPolicy": "baselines.simple",
    "ConstantPolicy": "baselines.simple",
    "OraclePolicy": "baselines.simple",
    "HFCausalLMPolicy": "baselines.hf_causal",
    "HFVLMPolicy": "baselines.hf_vlm",
    "HFDiffusionLMPolicy": "baselines.hf_dllm",
    "resolve_policy": "baselines.specs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'baselines' has no attribute {name!r}")
