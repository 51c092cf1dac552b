"""The three task envs the policy tests act on, and their first test-split observation each."""

from __future__ import annotations

import gymnasium as gym

import lavida_envs  # noqa: F401  (registers the env ids)

ENVS = ("LaViDa/VisualMath-v0", "LaViDa/Grounding-v0", "LaViDa/ImageEdit-v0")


def first_observations() -> list[dict]:
    """Observation of problem 0 of each of ``ENVS`` (difficulty 1, test split)."""
    return [gym.make(env_id, difficulty=1, split="test").reset(options={"index": 0})[0] for env_id in ENVS]
