"""Tree-search rollouts over the denoising trajectory, for real-valued rewards (docs/design.md, "Training").

Contract (:func:`tree_rollout`):

* Input: a policy with ``rollout`` and the branching hook ``rollout_from(observations,
  parents, step, num_samples, generator)`` (each observation's parent row rebuilt after
  ``step`` denoising steps from its final tokens and unmask record -- positions unmasked at a
  step <= ``step`` keep their token, the rest are masked, forced positions stay -- and
  continued ``num_samples`` times, making only the remaining steps: the shared prefix is not
  recomputed; ``extras["nfe"]`` = model calls); env problems; ``num_generations`` = N and
  ``branch_steps`` = ``[0, s_1, ..., s_{k-1}]`` (strictly increasing, first 0).
* Round 0 samples N responses per problem from scratch. Round j takes each problem's best
  leaf so far (highest reward; ties: the earliest leaf, :func:`best_leaves`) and samples N
  continuations of it from step ``s_j``. Every leaf is scored by the env
  (:func:`lavida_envs.scoring.score_actions`).
* Output: an :class:`agents.rollout.GroupBatch` of all N*k leaves per problem, group-major
  (round by round inside a group), with ``metrics["tree_rounds"]`` and ``metrics["tree_nfe"]``.
  Advantages are plain group-normalised rewards over the N*k leaves (agents.losses).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from agents.rollout import ForcingConfig, GroupBatch, Problem, assemble_groups, concat_rollouts, open_problems, select_rows
from lavida_envs.scoring import score_actions

__all__ = ["best_leaves", "check_branch_steps", "tree_rollout"]


def check_branch_steps(branch_steps: Sequence[int], steps: int | None = None) -> list[int]:
    """The branch steps as ints, or ``ValueError`` unless strictly increasing from 0 (and < steps)."""
    out = [int(s) for s in branch_steps]
    if not out or out[0] != 0 or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"branch_steps must be strictly increasing and start at 0 (e.g. [0, 8]), got {list(branch_steps)}")
    if steps is not None and out[-1] >= steps:
        raise ValueError(f"branch_steps {out} must all be < steps ({steps})")
    return out


def best_leaves(rewards: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Row of the highest reward in each group 0..num_groups-1 (ties: the lowest row)."""
    rows = torch.arange(len(rewards))
    best = torch.empty(num_groups, dtype=torch.long)
    for g in range(num_groups):
        mine = rows[group_ids == g]
        if not mine.numel():
            raise ValueError(f"group {g} has no leaves")
        best[g] = mine[int(torch.argmax(rewards[mine].double()))]  # argmax returns the first maximum
    return best


def tree_rollout(
    policy: Any,
    envs: Mapping[str, Any],
    problems: Sequence[Problem | tuple[str, int]],
    num_generations: int,
    *,
    branch_steps: Sequence[int] = (0, 8),
    generator: torch.Generator | None = None,
) -> GroupBatch:
    """Tree-search groups (N*k leaves each) for env problems, scored by the envs (module docstring)."""
    schedule = check_branch_steps(branch_steps)
    if len(schedule) > 1 and not policy.supports_tree_search:
        raise TypeError(
            f"{type(policy).__name__}.supports_tree_search is False: tree search needs rollout_from to continue a "
            "rollout from an intermediate denoising state; turn tree_search off for this policy"
        )
    groups, observations = open_problems(envs, problems)
    parts, results, owners = [], [], []
    n = num_generations
    for j, step in enumerate(schedule):
        if j == 0:
            part = policy.rollout(observations, n, generator=generator)
        else:
            everything = concat_rollouts(parts)
            rewards = torch.tensor([r.reward for r in results])
            best = best_leaves(rewards, torch.tensor(owners), len(groups))
            part = policy.rollout_from(observations, select_rows(everything, best), step, n, generator=generator)
        if len(part) != len(groups) * n:
            raise ValueError(f"round {j}: the policy returned {len(part)} rows for {len(groups)} observations x {n}")
        for g, group in enumerate(groups):
            actions = part.actions[g * n : (g + 1) * n]
            results += score_actions(envs[group["env"]], group["index"], actions).steps
        owners += [g for g in range(len(groups)) for _ in range(n)]
        parts.append(part)
    everything = concat_rollouts(parts)
    keep = sorted(range(len(owners)), key=lambda row: (owners[row], row))  # group-major, rounds in order
    batch = assemble_groups(everything, results, owners, [None] * len(owners), keep, groups, 0, ForcingConfig(enabled=False))
    batch.metrics["tree_rounds"] = float(len(schedule))
    batch.metrics["tree_nfe"] = float(everything.extras.get("nfe", 0))
    return batch
