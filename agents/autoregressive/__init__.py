"""The autoregressive agent backbone: a tiny causal LM (:class:`ARPolicy`) trained by the same trainer.

Exports are lazy: ``ARPolicy`` (:mod:`agents.autoregressive.policy`), ``ARConfig``, ``ARModel``,
``AllowedTokens``, ``GumbelSampling``, ``positions`` (:mod:`agents.autoregressive.model`).
"""

from __future__ import annotations

from lavida_envs._lazy import lazy_getattr

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ARPolicy": "agents.autoregressive.policy",
    "ARConfig": "agents.autoregressive.model",
    "ARModel": "agents.autoregressive.model",
    "AllowedTokens": "agents.autoregressive.model",
    "GumbelSampling": "agents.autoregressive.model",
    "positions": "agents.autoregressive.model",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
