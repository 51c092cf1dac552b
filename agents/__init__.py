"""Agents: policy protocols and the LaViDa-R1 masked-diffusion policy.

Exports are lazy, so ``import agents`` stays cheap (torch and transformers load on first use):
``DiffusionPolicy``, ``ARPolicy``, ``check_policy``, ``Policy``, ``TrainablePolicy``, ``as_policy``, ``Rollouts``.
"""

from __future__ import annotations

from lavida_envs._lazy import lazy_getattr

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ARPolicy": "agents.autoregressive.policy",
    "DiffusionPolicy": "agents.diffusion.policy",
    "check_policy": "agents.policy_check",
    "Policy": "agents.policy",
    "TrainablePolicy": "agents.policy",
    "as_policy": "agents.policy",
    "Rollouts": "agents.policy",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
