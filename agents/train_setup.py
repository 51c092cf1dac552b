"""Building a training run: the policy a config names, the learning-rate schedule, DDP attribute forwarding.

* :func:`build_policy` -- ``init_from`` or ``policy``: ``diffusion`` (``DiffusionPolicy.tiny``),
  ``ar`` (``baselines.autoregressive.ARPolicy.tiny``), else any spec of
  :func:`baselines.specs.resolve_policy` (a checkpoint folder, ``module:factory``, ``file.py:factory``).
* :func:`lr_factor` -- multiplier of ``learning_rate`` per global step: ``sft_learning_rate /
  learning_rate`` during the ``sft_steps`` warm start of phase ``rl``, then linear warm-up over
  ``warmup_steps`` and ``lr_scheduler_type`` (constant | linear | cosine, to 0 at ``max_steps``).
* :func:`forward_attributes` -- a DDP-wrapped model that still answers ``model.config`` and
  ``model.save_pretrained`` (the policy keeps calling its model; forwards go through DDP so
  gradients are averaged).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agents.config import TrainConfig

__all__ = ["build_policy", "forward_attributes", "lr_factor"]


def build_policy(config: TrainConfig) -> Any:
    """The policy ``config`` names: ``diffusion`` / ``ar`` (tiny, seeded) or a checkpoint (``init_from`` first)."""
    spec = config.init_from or config.policy
    if spec == "diffusion":
        from agents.diffusion.policy import DiffusionPolicy

        return DiffusionPolicy.tiny(seed=config.seed)
    if spec == "ar":
        from baselines.autoregressive import ARPolicy  # type: ignore[import-not-found]

        return ARPolicy.tiny(seed=config.seed)
    from baselines.specs import resolve_policy

    return resolve_policy(spec)


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of ``learning_rate`` at ``step`` (SFT warm start, then warm-up and schedule)."""
    offset = config.sft_steps if config.phase == "rl" else 0
    if step < offset:
        return config.sft_learning_rate / config.learning_rate
    s = step - offset
    if s < config.warmup_steps:
        return (s + 1) / config.warmup_steps
    progress = min(1.0, (s - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    if config.lr_scheduler_type == "linear":
        return 1.0 - progress
    if config.lr_scheduler_type == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def forward_attributes(wrapped: torch.nn.Module) -> torch.nn.Module:
    """Let a DDP wrapper answer attribute lookups of its module (``config``, ``save_pretrained``)."""

    def __getattr__(self: Any, name: str) -> Any:
        try:
            return torch.nn.Module.__getattr__(self, name)
        except AttributeError:
            return getattr(torch.nn.Module.__getattr__(self, "module"), name)

    wrapped.__class__ = type(f"Forwarding{type(wrapped).__name__}", (type(wrapped),), {"__getattr__": __getattr__})
    return wrapped
