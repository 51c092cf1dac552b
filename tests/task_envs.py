"""The three task envs the policy tests act on, and their first test-split observation each."""

from __future__ import annotations

import gymnasium as gym
import torch

import lavida_envs  # noqa: F401  (registers the env ids)

ENVS = ("LaViDa/VisualMath-v0", "LaViDa/Grounding-v0", "LaViDa/ImageEdit-v0")


def first_observations() -> list[dict]:
    """Observation of problem 0 of each of ``ENVS`` (difficulty 1, test split)."""
    return [gym.make(env_id, difficulty=1, split="test").reset(options={"index": 0})[0] for env_id in ENVS]


def assert_left_padding_changes_nothing(policy, observation: dict, other: dict) -> None:
    """``observation`` with prompts of three lengths (one left-padded sampler call) and ``other``
    (another layout, another call): each row batched equals the row alone."""
    rows = [dict(observation, prompt=observation["prompt"][:n]) for n in (40, 90, len(observation["prompt"]))]
    assert len({len(policy.prompt_ids(o)) for o in rows}) == 3
    assert len({policy.layout(o.get("task", "")) for o in rows}) == 1  # one layout: one call
    rows.insert(1, other)
    together = policy.rollout(rows, 1, generator=torch.Generator().manual_seed(0))
    for i, obs in enumerate(rows):
        alone = policy.rollout([obs], 1, generator=torch.Generator().manual_seed(0))
        width = alone.sequences.shape[1]
        assert torch.equal(together.sequences[i, -width:], alone.sequences[0])
        assert not together.attention_mask[i, :-width].any()
