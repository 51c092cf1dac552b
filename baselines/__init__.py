"""Baselines: simple policies, Hugging Face adapters and policy specs (docs/design.md, "Public API").

Exports are lazy, so ``import baselines`` stays cheap (torch/transformers load on first use):
``RandomPolicy``, ``ConstantPolicy``, ``OraclePolicy`` (:mod:`baselines.simple`),
``HFCausalLMPolicy``, ``HFVLMPolicy`` (:mod:`baselines.hf`) and
``resolve_policy`` (:mod:`baselines.specs`) and ``ARPolicy`` (re-exported from :mod:`agents.autoregressive`).
"""

from __future__ import annotations

from lavida_envs._lazy import lazy_getattr

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "RandomPolicy": "baselines.simple",
    "ConstantPolicy": "baselines.simple",
    "OraclePolicy": "baselines.simple",
    "HFCausalLMPolicy": "baselines.hf_causal",
    "HFVLMPolicy": "baselines.hf_vlm",
    "resolve_policy": "baselines.specs",
    "ARPolicy": "agents.autoregressive.policy",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
