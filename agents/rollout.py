"""Group rollouts against the envs, with answer forcing (docs/design.md, "Training").

Contract (:func:`collect_groups`):

* Input: any :class:`agents.policy.TrainablePolicy`; ``envs`` maps a name to a Gymnasium env
  whose ``reset(options={"index": i})`` picks problem ``i`` (every ``LaViDa/*`` env);
  ``problems`` lists ``(env name, index)``, one group each; ``num_generations`` = N.
* Each problem is reset by index; its observation (plus ``"task"`` from the reset info, so the
  policy can pick the task's response layout) is sampled N times; the group's actions are
  scored by :func:`lavida_envs.scoring.score_actions` (one reset, one step per action: the same
  result as one ``reset(index)`` + ``step(action)`` episode per action), collecting the
  reward, ``reward_components`` and ``correct``.
* Answer forcing: a group of a task with a gold answer (``forcing.tasks``; never
  ``image_edit``) *triggers* when all N rewards are below ``forcing.threshold``; a triggered
  group keeps, with probability ``forcing.prob``, one extra (N+1-th) sample whose response
  ends in ``forcing.template`` filled with the gold ``info["answer"]`` (the policy's
  ``forced`` suffix, so the model writes the reasoning before it), scored by the env like the
  others; its row joins the group, so group normalisation treats it like any other sample.
* Cost choice: the coin (``rng.random() < prob``, one draw per group, in group order) is
  independent of the rewards, so it is drawn *before* sampling and the forced sample is
  generated in the same policy call as the N free ones, only for groups whose coin came up
  (a fraction ``prob`` of the gold-answer groups, not every group as in the paper's always-N+1
  scheme); it is kept only if the group then triggers, and only kept ones are scored. No
  second sampling pass, ~``prob`` extra rows per gold-answer group.
* ``forced_tokens_in_loss=False`` (default): a kept forced row's ``response_mask`` drops the
  forced positions, so its likelihood scores only the reasoning the model wrote.
* Output :class:`GroupBatch`: the kept rows (group-major: each group's N free rows, then its
  forced row), ``rewards``, ``group_ids`` (0..G-1 = position in ``problems``), ``forced``,
  ``correct``, per-row ``tasks``/``infos`` and ``metrics``: ``frac_reward_zero_std`` (free
  rows) and ``frac_reward_zero_std/after_forcing`` (kept rows), per group as TRL;
  ``forcing_trigger_frac`` (groups meeting the trigger condition, logged even with forcing
  off, for the ablations), ``forced_frac`` (groups that kept a forced row),
  ``forced_sampled_frac`` (groups that paid for one), ``forced_reward``, and ``reward``,
  ``reward_std`` (mean group std), ``reward/<task>``, ``accuracy/<task>`` over the free rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from agents.losses import frac_zero_std, group_std
from agents.policy import Rollouts, TrainablePolicy
from agents.state_codec import register_state_type
from lavida_envs.scoring import StepResult, score_actions

register_state_type(StepResult)  # a checkpoint holds the rollout batch's step results

__all__ = [
    "ForcingConfig",
    "GroupBatch",
    "Problem",
    "as_problem",
    "assemble_groups",
    "batch_rewards",
    "collect_groups",
    "concat_rollouts",
    "group_metrics",
    "open_problems",
    "rollout_metrics",
    "sample_problems",
    "select_rows",
]


@register_state_type
@dataclass(frozen=True)
class Problem:
    """One group's problem: the env it comes from (a key of ``envs``) and its index."""

    env: str
    index: int


@register_state_type
@dataclass(frozen=True)
class ForcingConfig:
    """Answer-forcing settings (TrainConfig's ``answer_forcing``/``forcing_*`` fields)."""

    enabled: bool = True
    threshold: float = 0.5
    prob: float = 0.1
    tasks: tuple[str, ...] = ("visual_math", "grounding")
    template: str = "<answer>{answer}</answer>"
    tokens_in_loss: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ForcingConfig:
        """The forcing settings of a :class:`agents.config.TrainConfig`."""
        return cls(
            enabled=bool(config.answer_forcing), threshold=float(config.forcing_threshold),
            prob=float(config.forcing_prob), tasks=tuple(config.forcing_tasks),
            template=str(config.forcing_template), tokens_in_loss=bool(config.forced_tokens_in_loss),
        )  # fmt: skip

    def has_gold(self, task: str, answer: Any) -> bool:
        """Whether a group of ``task`` with gold ``answer`` could be forced (whatever ``enabled``/``prob``)."""
        return task in self.tasks and isinstance(answer, str) and bool(answer.strip())

    def suffix(self, task: str, answer: Any) -> str | None:
        """The forced suffix for a group of ``task`` with gold ``answer`` (None: never forced)."""
        if not self.enabled or self.prob <= 0 or not self.has_gold(task, answer):
            return None
        return self.template.format(answer=answer.strip())


@register_state_type
@dataclass
class GroupBatch:
    """Scored groups ready for advantages: kept rows, rewards and group ids (group-major)."""

    rollouts: Rollouts
    rewards: torch.Tensor  # (R,) float
    group_ids: torch.Tensor  # (R,) long, 0..G-1
    forced: torch.Tensor  # (R,) bool: the row is an answer-forced sample
    correct: torch.Tensor  # (R,) bool
    tasks: list[str]  # (R) task of each row
    infos: list[dict[str, Any]]  # (R) step info of each row
    problems: list[dict[str, Any]]  # (G) env, index, task, answer, solution of each group
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rollouts)


# ----- Rollouts plumbing ---------------------------------------------------------------
def _select(value: Any, rows: torch.Tensor, n: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
        return value[rows.to(value.device)]
    if isinstance(value, (list, tuple)) and len(value) == n:
        return [value[i] for i in rows.tolist()]
    return value


def select_rows(rollouts: Rollouts, rows: Sequence[int] | torch.Tensor) -> Rollouts:
    """The rollouts of ``rows`` in that order (per-row tensors and lists in ``extras`` too)."""
    n = len(rollouts)
    idx = torch.as_tensor(list(rows) if not isinstance(rows, torch.Tensor) else rows, dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"rows {idx.tolist()} out of range for {n} rollouts")
    return rollouts.map_fields(lambda _, value: _select(value, idx, n))


def _cat(values: list[Any], sizes: list[int], name: str) -> Any:
    first = values[0]
    if first is None:
        if any(v is not None for v in values):
            raise ValueError(f"cannot concatenate rollouts: {name} is None in some parts only")
        return None
    if isinstance(first, torch.Tensor) and first.dim() >= 1 and all(v.shape[0] == s for v, s in zip(values, sizes)):
        widths = {tuple(v.shape[1:]) for v in values}
        if len(widths) > 1:
            raise ValueError(f"cannot concatenate rollouts: {name} shapes differ {sorted(widths)} (pad to one width)")
        return torch.cat(values, dim=0)
    if isinstance(first, list) and all(len(v) == s for v, s in zip(values, sizes)):
        return [x for v in values for x in v]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(values)  # counters such as nfe
    return first


def concat_rollouts(parts: Sequence[Rollouts]) -> Rollouts:
    """Rows of several rollouts of one policy, stacked (padded widths must agree)."""
    if not parts:
        raise ValueError("concat_rollouts needs at least one Rollouts")
    sizes = [len(p) for p in parts]
    names = [f.name for f in fields(Rollouts) if f.name != "extras"]
    fields_ = {n: _cat([getattr(p, n) for p in parts], sizes, n) for n in names}
    keys = [k for k in parts[0].extras if all(k in p.extras for p in parts)]
    extras = {k: _cat([p.extras[k] for p in parts], sizes, f"extras[{k!r}]") for k in keys}
    return Rollouts(**fields_, extras=extras)


# ----- metrics ----------------------------------------------------------------------------
def group_metrics(
    rewards: torch.Tensor, group_ids: torch.Tensor, tasks: Sequence[str], correct: torch.Tensor
) -> dict[str, float]:
    """TRL-named reward metrics of a set of rows: reward, reward_std, frac_reward_zero_std, per task."""
    if rewards.numel() == 0:
        return {}
    out = {
        "reward": float(rewards.double().mean()),
        "reward_std": float(group_std(rewards, group_ids).mean()),
        "frac_reward_zero_std": frac_zero_std(rewards, group_ids),
    }
    by_task: dict[str, list[int]] = defaultdict(list)
    for row, task in enumerate(tasks):
        by_task[task].append(row)
    for task, rows in sorted(by_task.items()):
        out[f"reward/{task}"] = float(rewards[rows].double().mean())
        out[f"accuracy/{task}"] = float(correct[rows].double().mean())
    return out


# ----- the collector ------------------------------------------------------------------------
def as_problem(p: Problem | tuple[str, int]) -> Problem:
    """A :class:`Problem` from itself or an ``(env name, index)`` pair."""
    return p if isinstance(p, Problem) else Problem(str(p[0]), int(p[1]))


def sample_problems(
    weights: Mapping[str, float],
    count: int,
    rng: np.random.Generator,
    envs: Mapping[str, Any] | None = None,
    pool: int | None = None,
    *,
    task_rng: np.random.Generator | None = None,
) -> list[Problem]:
    """``count`` problems of the mixture: env name drawn by weight, index uniform over its problems.

    ``task_rng`` (optional) draws the env names instead of ``rng``: a stream shared by all ranks of a
    multi-process run gives every rank the same tasks in the same order (equal forwards per task) while
    ``rng`` (per rank) still draws different problem indices.

    An env with ``unwrapped.num_problems()`` (dataset-backed) bounds the index; procedural
    envs draw from ``[0, 2**31 - 1)``; ``pool`` bounds it further (indices ``[0, pool)`` only).
    """
    names = [name for name, w in weights.items() if w > 0]
    if not names or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0 with at least one > 0, got {dict(weights)}")
    p = np.array([weights[n] for n in names], dtype=np.float64)
    picks = (rng if task_rng is None else task_rng).choice(len(names), size=count, p=p / p.sum())
    out = []
    for k in picks:
        env = (envs or {}).get(names[k])
        sized = getattr(getattr(env, "unwrapped", env), "num_problems", None)
        high = (sized() if callable(sized) else None) or 2**31 - 1
        high = min(high, pool) if pool else high
        out.append(Problem(names[k], int(rng.integers(0, high))))
    return out


def open_problems(
    envs: Mapping[str, Any], problems: Sequence[Problem | tuple[str, int]]
) -> tuple[list[dict[str, Any]], list[dict]]:
    """Reset each problem by index: per group ``{env, index, task, answer, solution}`` and its observation.

    The observation handed to the policy gets ``"task"`` (from the reset info) added, so the
    policy can choose the task's response layout; gold answers stay out of it.
    """
    refs = [as_problem(p) for p in problems]
    missing = sorted({r.env for r in refs} - set(envs))
    if missing:
        raise KeyError(f"problems name env(s) {missing} that envs does not hold (has {sorted(envs)})")
    groups, observations = [], []
    for ref in refs:
        obs, info = envs[ref.env].reset(options={"index": ref.index})
        task = str(info.get("task", ref.env))
        answer, solution = info.get("answer"), info.get("solution")
        groups.append(dict(env=ref.env, index=ref.index, task=task, answer=answer, solution=solution))
        observations.append({**obs, "task": task})
    return groups, observations


def collect_groups(
    policy: TrainablePolicy,
    envs: Mapping[str, Any],
    problems: Sequence[Problem | tuple[str, int]],
    num_generations: int,
    *,
    forcing: ForcingConfig | None = None,
    rng: np.random.Generator | None = None,
    generator: torch.Generator | None = None,
) -> GroupBatch:
    """Sample, score and (maybe) answer-force one group per problem (see the module docstring)."""
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    forcing = forcing or ForcingConfig(enabled=False)
    if not 0.0 <= forcing.threshold <= 1.0 or not 0.0 <= forcing.prob <= 1.0:
        raise ValueError(f"forcing threshold and prob must be in [0, 1], got {forcing.threshold} and {forcing.prob}")
    if rng is None:
        if forcing.enabled and 0.0 < forcing.prob < 1.0:
            raise ValueError("answer forcing with 0 < prob < 1 needs rng: a seeded np.random.Generator kept across steps")
        rng = np.random.default_rng(0)
    groups, observations = open_problems(envs, problems)
    for group in groups:  # the coin is independent of the rewards: draw it before sampling
        coin = float(rng.random()) < forcing.prob
        group["suffix"] = forcing.suffix(group["task"], group["answer"]) if coin else None
    row_group: list[int] = []  # one policy row per free sample, plus a forced row where the coin came up
    row_forced: list[str | None] = []
    for g, group in enumerate(groups):
        extra = [group["suffix"]] if group["suffix"] is not None else []
        row_forced += [None] * num_generations + extra
        row_group += [g] * (num_generations + len(extra))
    row_obs = [observations[g] for g in row_group]
    rollouts = policy.rollout(row_obs, 1, forced=row_forced, generator=generator)
    if len(rollouts) != len(row_obs):
        raise ValueError(f"policy.rollout returned {len(rollouts)} rows for {len(row_obs)} observations x 1 sample")
    results: list[StepResult | None] = [None] * len(row_obs)
    rows_of: dict[int, list[int]] = defaultdict(list)
    for row, g in enumerate(row_group):
        rows_of[g].append(row)
    keep, triggered = [], 0
    for g, group in enumerate(groups):
        rows = rows_of[g]
        free, extra = rows[:num_generations], rows[num_generations:]
        # one reset scores the group's free rows and its forced row (kept only if forcing fires)
        episode = score_actions(envs[group["env"]], group["index"], [rollouts.actions[r] for r in free + extra])
        for row, res in zip(free + extra, episode.steps):
            results[row] = res
        fires = forcing.has_gold(group["task"], group["answer"]) and all(results[r].reward < forcing.threshold for r in free)
        triggered += int(fires)
        keep += free
        if fires and extra:
            keep.append(extra[0])
    return assemble_groups(rollouts, results, row_group, row_forced, keep, groups, triggered, forcing)


def assemble_groups(
    rollouts: Rollouts,
    results: Sequence[StepResult | None],
    row_group: Sequence[int],
    row_forced: Sequence[str | None],
    keep: Sequence[int],
    groups: Sequence[dict[str, Any]],
    triggered: int,
    forcing: ForcingConfig,
) -> GroupBatch:
    """A :class:`GroupBatch` of the scored rows ``keep`` (in that order) with its metrics."""
    kept = select_rows(rollouts, keep)
    forced = torch.tensor([row_forced[r] is not None for r in keep], dtype=torch.bool)
    if not forcing.tokens_in_loss and kept.forced_mask is not None and bool(forced.any()):
        kept.response_mask = kept.response_mask & ~(kept.forced_mask & forced[:, None].to(kept.forced_mask.device))
    group_ids = torch.tensor([row_group[r] for r in keep], dtype=torch.long)
    kept.prompt_index = group_ids.clone()
    rewards = torch.tensor([results[r].reward for r in keep], dtype=torch.float32)
    correct = torch.tensor([results[r].correct for r in keep], dtype=torch.bool)
    tasks = [groups[row_group[r]]["task"] for r in keep]
    n_groups = max(len(groups), 1)
    own = {  # this part's exact fractions; rollout_metrics fills in the reward metrics
        "forcing_trigger_frac": triggered / n_groups,
        "forced_frac": int(forced.sum()) / n_groups,
        "forced_sampled_frac": sum(g.get("suffix") is not None for g in groups) / n_groups,
    }
    problems = [{k: g[k] for k in ("env", "index", "task", "answer", "solution")} for g in groups]
    batch = GroupBatch(
        rollouts=kept, rewards=rewards, group_ids=group_ids, forced=forced, correct=correct, tasks=tasks,
        infos=[results[r].info for r in keep], problems=problems, metrics=own,
    )  # fmt: skip
    batch.metrics = {**rollout_metrics([batch]), **own}
    return batch


def batch_rewards(parts: Sequence[GroupBatch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (R,) and batch-wide group ids (R,) of all parts' rows in order (part k's groups after part k-1's)."""
    offsets = np.cumsum([0] + [len(p.problems) for p in parts])
    rewards = torch.cat([p.rewards for p in parts])
    group_ids = torch.cat([p.group_ids + int(off) for p, off in zip(parts, offsets)])
    return rewards, group_ids


def rollout_metrics(parts: Sequence[GroupBatch]) -> dict[str, float]:
    """Reward and forcing metrics of scored parts (one step's, or one part's): the module docstring's list."""
    rewards, group_ids = batch_rewards(parts)
    forced = torch.cat([p.forced for p in parts])
    correct = torch.cat([p.correct for p in parts])
    tasks = [t for p in parts for t in p.tasks]
    free = ~forced
    out = group_metrics(rewards[free], group_ids[free], [t for t, f in zip(tasks, free.tolist()) if f], correct[free])
    num_groups = max(sum(len(p.problems) for p in parts), 1)
    out.update({
        "frac_reward_zero_std/after_forcing": frac_zero_std(rewards, group_ids),
        "forcing_trigger_frac": sum(p.metrics.get("forcing_trigger_frac", 0.0) * len(p.problems) for p in parts) / num_groups,
        "forced_frac": float(forced.sum()) / num_groups,
    })  # fmt: skip
    if bool(forced.any()):
        out["forced_reward"] = float(rewards[forced].mean())
    nfe = [p.metrics["tree_nfe"] for p in parts if "tree_nfe" in p.metrics]
    if nfe:
        out["tree_nfe"] = float(sum(nfe))
    return out
