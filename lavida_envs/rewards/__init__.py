"""Verifiable rewards (docs/design.md, "Rewards"), imported lazily so each stays cheap to load.

``from lavida_envs.rewards import math_equal`` imports only the math module.
"""

from __future__ import annotations

from lavida_envs._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "extract_answer": "lavida_envs.rewards.math",
    "math_equal": "lavida_envs.rewards.math",
    "math_equal_batch": "lavida_envs.rewards.math",
    "check_answer": "lavida_envs.rewards.math",
    "MathVerdict": "lavida_envs.rewards.math",
    "format_reward": "lavida_envs.rewards.format",
    "parse_box": "lavida_envs.rewards.grounding",
    "box_iou": "lavida_envs.rewards.grounding",
    "grounding_metrics": "lavida_envs.rewards.grounding",
    "edit_fidelity": "lavida_envs.rewards.edit",
    "CLIPScorer": "lavida_envs.rewards.edit",
    "JudgeScorer": "lavida_envs.rewards.edit",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
