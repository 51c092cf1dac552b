"""Tree-search rollouts over the denoising trajectory, for real-valued rewards (DESIGN section 5).

Contract (:func:`tree_search`, on the sampler API):

* Input: a ``model_fn`` and prompts (B, P) as for :func:`agents.diffusion.sampler.sample`,
  a ``score_fn(sequences (M, P+G), prompt_index (M,)) -> rewards (M,)`` callback,
  ``num_generations`` = N and ``branch_steps`` = ``[0, s_1, ..., s_{k-1}]`` (strictly
  increasing, first 0, each < ``steps``).
* Round 0 samples N responses per prompt from scratch. Round j takes each prompt's best leaf
  so far (highest reward; ties: the earliest leaf), rebuilds its state after ``s_j`` steps
  from its final tokens and unmask record (:func:`~agents.diffusion.sampler.rebuild_state`:
  positions unmasked at a step <= s_j keep their token, the rest are masked; forced
  positions stay) and samples N continuations from that state, which make only the
  remaining ``steps - s_j`` denoising steps: the shared prefix is not recomputed.
* Output :class:`TreeOutput`: all N*k leaves per prompt, prompt-major (group b = rows
  ``b*N*k .. (b+1)*N*k - 1``, round by round), their rewards, ``group_ids``, ``round``,
  ``parent`` (the leaf a row branched from, -1 in round 0), the rebuilt ``branch_states``
  (before repetition), and the work: ``nfe`` (model calls), ``row_evals`` (rows x calls,
  the compute that N*k independent chains would spend ``N*k*steps`` of) per round and total.
  Advantages are plain group-normalised rewards over the N*k leaves (agents.losses).

:func:`tree_rollout` does the same at the policy level for any policy with ``rollout`` and the
branching hook ``rollout_from(observations, parents, step, num_samples, generator)`` (each
observation's parent row rebuilt after ``step`` steps and continued ``num_samples`` times;
a :class:`agents.policy.Rollouts` like ``rollout`` returns, ``extras["nfe"]`` = model calls)
and returns an :class:`agents.rollout.GroupBatch` scored by the envs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from agents.diffusion.sampler import ModelFn, SamplerState, rebuild_state, sample
from agents.rollout import (
    ForcingConfig,
    GroupBatch,
    Problem,
    assemble_groups,
    concat_rollouts,
    open_problems,
    score_actions,
    select_rows,
)

__all__ = ["TreeOutput", "best_leaves", "check_branch_steps", "tree_rollout", "tree_search"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TreeOutput:
    """All leaves of the trees of a batch of prompts (prompt-major) and the work they took."""

    sequences: torch.Tensor  # (B*N*k, P+G) long
    unmask_step: torch.Tensor  # (B*N*k, G) long
    rewards: torch.Tensor  # (B*N*k,) float
    group_ids: torch.Tensor  # (B*N*k,) long: the prompt of each leaf
    round: torch.Tensor  # (B*N*k,) long: 0..k-1
    parent: torch.Tensor  # (B*N*k,) long: output row the leaf branched from, -1 in round 0
    nfe: int  # model calls, all rounds
    row_evals: int  # rows x model calls, all rounds
    nfe_per_round: list[int] = field(default_factory=list)
    row_evals_per_round: list[int] = field(default_factory=list)
    branch_states: list[SamplerState] = field(default_factory=list)  # (B rows each), rounds 1..k-1


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


class _Counter:
    """model_fn wrapper counting calls and rows."""

    def __init__(self, model_fn: ModelFn) -> None:
        self.model_fn, self.calls, self.rows = model_fn, 0, 0

    def __call__(self, ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        self.rows += int(ids.shape[0])
        return self.model_fn(ids, attention_mask)


def tree_search(
    model_fn: ModelFn,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    score_fn: ScoreFn,
    num_generations: int,
    branch_steps: Sequence[int] = (0, 8),
    forced_ids: torch.Tensor | None = None,
    forced_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    **sampler_kwargs: Any,
) -> TreeOutput:
    """N*k leaves per prompt by branching from the best leaf's rebuilt state (module docstring)."""
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    schedule = check_branch_steps(branch_steps, None if sampler_kwargs.get("threshold") is not None else sampler_kwargs.get("steps"))
    batch, prompt_len, n = prompt_ids.shape[0], prompt_ids.shape[1], num_generations
    counter = _Counter(model_fn)
    rep_prompts = prompt_ids.repeat_interleave(n, 0)
    rep_mask = None if attention_mask is None else attention_mask.repeat_interleave(n, 0)
    owner = torch.arange(batch).repeat_interleave(n)  # prompt of each row in a round
    seqs, records, rewards, rounds, parents = [], [], [], [], []
    nfe_per_round, rows_per_round, branch_states = [], [], []
    for j, step in enumerate(schedule):
        calls, rows = counter.calls, counter.rows
        if j == 0:
            out = sample(counter, rep_prompts, rep_mask, forced_ids=_rep(forced_ids, n), forced_mask=_rep(forced_mask, n),
                         generator=generator, **sampler_kwargs)  # fmt: skip
            parent = torch.full((batch * n,), -1, dtype=torch.long)
        else:
            done = torch.cat(seqs), torch.cat(records), torch.cat(rewards)
            best = best_leaves(done[2], torch.cat([owner] * j), batch)  # rows in round-major order so far
            state = rebuild_state(done[0][best], done[1][best], step, prompt_len, sampler_kwargs["mask_id"])
            branch_states.append(state)
            out = sample(counter, rep_prompts, rep_mask, generator=generator, state=state.repeat(n), **sampler_kwargs)
            parent = best.repeat_interleave(n)
        seqs.append(out.sequences)
        records.append(out.unmask_step)
        rewards.append(_rewards(score_fn, out.sequences, owner))
        rounds.append(torch.full((batch * n,), j, dtype=torch.long))
        parents.append(parent)
        nfe_per_round.append(counter.calls - calls)
        rows_per_round.append(counter.rows - rows)
    # round-major -> prompt-major (group b: round 0's N rows, round 1's N rows, ...)
    k = len(schedule)
    order = torch.arange(k * batch * n).view(k, batch, n).permute(1, 0, 2).reshape(-1)
    where = torch.empty_like(order)
    where[order] = torch.arange(len(order))  # round-major row -> output row
    parent = torch.cat(parents)[order]
    parent = torch.where(parent >= 0, where[parent.clamp(min=0)], parent)
    return TreeOutput(
        sequences=torch.cat(seqs)[order], unmask_step=torch.cat(records)[order], rewards=torch.cat(rewards)[order],
        group_ids=torch.cat([owner] * k)[order], round=torch.cat(rounds)[order], parent=parent,
        nfe=counter.calls, row_evals=counter.rows, nfe_per_round=nfe_per_round, row_evals_per_round=rows_per_round,
        branch_states=branch_states,
    )  # fmt: skip


def _rep(x: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if x is None else x.repeat_interleave(n, 0)


def _rewards(score_fn: ScoreFn, sequences: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    rewards = torch.as_tensor(score_fn(sequences, owner), dtype=torch.float32).reshape(-1)
    if rewards.shape[0] != sequences.shape[0]:
        raise ValueError(f"score_fn returned {rewards.shape[0]} rewards for {sequences.shape[0]} sequences")
    return rewards


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
    if len(schedule) > 1 and not callable(getattr(policy, "rollout_from", None)):
        raise TypeError(
            f"{type(policy).__name__} has no rollout_from(observations, parents, step, num_samples, generator); "
            "tree search needs it to continue a rollout from an intermediate denoising state"
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
            results += score_actions(envs[group["env"]], group["index"], actions)
        owners += [g for g in range(len(groups)) for _ in range(n)]
        parts.append(part)
    everything = concat_rollouts(parts)
    keep = sorted(range(len(owners)), key=lambda row: (owners[row], row))  # group-major, rounds in order
    batch = assemble_groups(everything, results, owners, [None] * len(owners), keep, groups, 0, ForcingConfig(enabled=False))
    batch.metrics["tree_rounds"] = float(len(schedule))
    batch.metrics["tree_nfe"] = float(everything.extras.get("nfe", 0))
    return batch
