"""Agents: policy protocols and the LaViDa-R1 masked-diffusion policy.

Exports are lazy, so ``import agents`` stays cheap (torch and transformers load on first use):
``DiffusionPolicy``, ``Policy``, ``TrainablePolicy``, ``as_policy``, ``Rollouts``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "DiffusionPolicy": "agents.diffusion.policy",
    "Policy": "agents.policy",
    "TrainablePolicy": "agents.policy",
    "as_policy": "agents.policy",
    "Rollouts": "agents.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
