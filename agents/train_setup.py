"""Building a training run: the policy a config names, the learning-rate schedule, DDP attribute forwarding.

* :func:`build_policy` -- ``init_from`` or ``policy`` as a trainable spec of
  :func:`agents.specs.trainable_policy`: ``diffusion``, ``ar``, ``hf-a2d:DIR``, ``hf-dllm:DIR``,
  ``hf-dream:DIR``, a checkpoint folder, ``module:factory`` / ``file.py:factory``.
* :func:`configure_policy` -- LoRA (``lora_r`` > 0) and gradient checkpointing of an HF backbone.
* :func:`check_capabilities` -- refuse a config whose run would use answer forcing or tree search
  (phase ``rl`` only) with a policy whose ``supports_forcing`` / ``supports_tree_search`` is False.
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
from agents.state_codec import CheckpointError

__all__ = ["PolicyLoadError", "build_policy", "check_capabilities", "configure_policy", "forward_attributes", "lr_factor"]


class PolicyLoadError(ValueError):
    """``policy`` / ``init_from`` names nothing loadable; the message names the field, the spec and the problem."""


def build_policy(config: TrainConfig) -> Any:
    """The :class:`agents.policy.TrainablePolicy` ``config`` names (``init_from`` first; :func:`agents.specs.trainable_policy`).

    A missing folder, a bad ``config.json`` or weights file is a :class:`PolicyLoadError` (``lavida train``: exit 2);
    a damaged checkpoint stays a :class:`agents.state_codec.CheckpointError`.
    """
    from agents.policy_files import require_code_trust
    from agents.specs import trainable_policy

    if config.init_from:
        require_code_trust(config.init_from, config.trust_remote_code, "--init_from")
    spec, field = (config.init_from, "init_from") if config.init_from else (config.policy, "policy")
    try:
        return trainable_policy(spec, seed=config.seed, trust_remote_code=config.trust_remote_code)
    except CheckpointError:
        raise
    except (ValueError, OSError) as exc:
        raise PolicyLoadError(f"TrainConfig.{field}={spec!r}: {exc}") from exc


def configure_policy(policy: Any, config: TrainConfig) -> None:
    """Apply ``lora_*`` and ``gradient_checkpointing`` to an HF backbone (:mod:`agents.hf.lora`; other policies: lora_r
    must be 0), then ``model_dtype`` / ``save_dtype`` (:func:`agents.hf.precision.configure_precision`)."""
    _configure_backbone(policy, config)
    if isinstance(getattr(policy, "model", None), torch.nn.Module):
        from agents.hf.precision import configure_precision

        hf = hasattr(policy.model, "backbone")
        configure_precision(policy, config.model_dtype if hf else "auto", config.save_dtype if hf else "auto",
                            config.mixed_precision)  # fmt: skip


def _configure_backbone(policy: Any, config: TrainConfig) -> None:
    if not hasattr(getattr(policy, "model", None), "backbone") or not hasattr(policy.model, "kind"):
        if config.lora_r:
            raise ValueError(
                f"TrainConfig.lora_r={config.lora_r}: LoRA needs a Hugging Face backbone (policy hf-a2d:DIR, hf-dllm:DIR, "
                f"hf-dream:DIR or an HF checkpoint), not {type(policy).__name__}; set lora_r: 0"
            )
        return
    from agents.hf.lora import LoraSettings, configure_backbone

    lora = None
    if config.lora_r:
        targets = LoraSettings.parse_targets(",".join(config.lora_target_modules))
        lora = LoraSettings(config.lora_r, config.lora_alpha, config.lora_dropout, targets)
    configure_backbone(policy, lora, config.gradient_checkpointing)


def check_capabilities(policy: Any, config: TrainConfig) -> None:
    """``ValueError`` naming the config key when the run would use answer forcing or tree search the policy lacks.

    Only what the run uses is checked (:attr:`TrainConfig.forcing_tasks_used`, :attr:`TrainConfig.tree_tasks_used`):
    phase ``sft`` never forces nor searches, so any policy runs it whatever those keys say.
    """
    name = type(policy).__name__
    if config.forcing_tasks_used and not policy.supports_forcing:
        raise ValueError(
            f"{name} cannot force answer suffixes (supports_forcing is False) but the config has answer_forcing: true "
            f"for {config.forcing_tasks_used}; set answer_forcing: false (or --answer_forcing false)"
        )
    if config.tree_tasks_used and not policy.supports_tree_search:
        raise ValueError(
            f"{name} cannot continue rollouts from an intermediate state (supports_tree_search is False) but the config "
            f"has tree_search: {list(config.tree_search)}; set tree_search: [] (or --tree_search '[]')"
        )


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of ``learning_rate`` at ``step`` (SFT warm start, then warm-up and schedule)."""
    offset = config.warm_start_steps
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
