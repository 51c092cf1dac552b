"""The pieces one LaViDa-R1 training step is made of (docs/design.md, "Training"), for any ``TrainablePolicy``.

Contract:

* :func:`make_envs` -- one env per task of the mixture (:data:`lavida_envs.TASK_ENV_IDS`, a split,
  ``difficulty``, ``image_size``); sampling problems from them by weight
  (:func:`agents.rollout.sample_problems`) is the ``LaViDa/MultiTask-v0`` mixture.
* :func:`set_decoding` / :func:`use_decoding` -- sampler settings (LLaDA's names) applied to
  the fields the policy's ``decoding`` dataclass has (with ``task``, ``gen_length`` goes to
  its ``task_gen_length`` when it has one), by replacing it with a validated copy, for good
  or inside a block.
* :func:`collect_rollouts` -- one :class:`agents.rollout.GroupBatch` per task present in
  ``problems``: tree search (:func:`agents.diffusion.tree.tree_rollout`) for
  ``config.tree_search`` tasks, else :func:`agents.rollout.collect_groups` with answer
  forcing; parts are kept apart so each is scored by the likelihood at its own width.
* :func:`rollout_advantages` -- ``gamma * A_distill + (1 - gamma) * A_grpo`` over all parts'
  rows (groups never span parts); :func:`agents.rollout.rollout_metrics` -- TRL-named reward
  metrics over the free rows and forcing metrics.
* :func:`sft_rollouts` -- reference solutions of ``problems`` as rollouts, one per task
  (``policy.sft_rollouts(observations, targets)``).
* :func:`likelihood` -- a :class:`Likelihood`: ``loglik`` (B,) and per-position ``token_logp``
  (text/image NLL) from ``policy.log_likelihood_terms`` (``samples`` mask draws); ``scored``
  = ``policy.scored_mask(rollouts)`` (token counts of the loss). :class:`NLLMeter` sums per-token NLL of text and image-code positions
  (``extras["code_mask"]``) over the scored positions.
* :func:`evaluate` -- greedy (temperature 0) held-out rewards on test problems
  ``rank, rank + world, ... < eval_episodes`` of each task: ``{task: [(reward, correct)]}``; every rank
  decodes ``ceil(eval_episodes / world)`` problems (a short share is padded, the padding's results dropped).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Iterator, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch

from agents.collectives import pad_shares
from agents.losses import distill_advantages, grpo_advantages, mix_advantages
from agents.policy import Rollouts
from agents.rollout import ForcingConfig, GroupBatch, Problem, batch_rewards, collect_groups, open_problems
from agents.state_codec import register_state_type
from lavida_envs import TASK_ENV_IDS
from lavida_envs.scoring import score_actions

__all__ = [
    "Likelihood",
    "NLLMeter",
    "TrainBatch",
    "collect_rollouts",
    "derive_seed",
    "evaluate",
    "likelihood",
    "make_envs",
    "rollout_advantages",
    "set_decoding",
    "sft_rollouts",
    "use_decoding",
]

def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. seed, rank, batch, part) via ``numpy.random.SeedSequence``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


@register_state_type
@dataclass
class TrainBatch:
    """One micro-batch of a step: rollout parts (one per task) with advantages, SFT parts, mask seed."""

    parts: list[GroupBatch]  # rollout groups ([] in SFT steps)
    advantages: torch.Tensor | None  # (R,) over the parts' rows in order
    sft: list[Rollouts]  # reference-solution rows, one part per task
    mask_seed: int  # likelihood masks of this batch (old, current and reference policy alike)
    metrics: dict[str, float] = field(default_factory=dict)
    old_loglik: torch.Tensor | None = None  # (R,) before the first update (updates_per_batch > 1)


def make_envs(config: Any, split: str, difficulty: str | None = None) -> dict[str, gym.Env]:
    """``{task: env}`` for the tasks of ``config`` with weight > 0 (at ``difficulty``, default the config's)."""
    level = str(config.difficulty if difficulty is None else difficulty)
    difficulty = level if level == "mixed" else int(level)
    envs = {}
    for task in config.task_weights:
        extra = dict(getattr(config, "env_kwargs", {}).get(task, {}))
        try:
            envs[task] = gym.make(TASK_ENV_IDS[task], split=split, difficulty=difficulty,
                                  **{"image_size": config.image_size, **extra})  # fmt: skip
        except (TypeError, ValueError) as exc:
            if not extra:
                raise
            raise ValueError(f"TrainConfig.env_kwargs.{task}={extra!r}: {exc}") from None
    return envs


def set_decoding(policy: Any, settings: Mapping[str, Any], task: str | None = None) -> Any:
    """Replace ``policy.decoding`` by a copy with ``settings`` (the fields it has); returns the previous value."""
    current = policy.decoding
    if not is_dataclass(current):
        raise TypeError(
            f"{type(policy).__name__}.decoding must be a dataclass (e.g. agents.diffusion.DecodingConfig), "
            f"got {type(current).__name__}"
        )
    names = {f.name for f in fields(current)}
    changes = {k: v for k, v in settings.items() if k in names}
    if task is not None and "task_gen_length" in names and "gen_length" in settings:
        changes = {k: v for k, v in changes.items() if k != "gen_length"}
        changes["task_gen_length"] = {**current.task_gen_length, task: int(settings["gen_length"])}
    policy.decoding = replace(current, **changes).validate()
    return current


@contextmanager
def use_decoding(policy: Any, settings: Mapping[str, Any], task: str | None = None) -> Iterator[None]:
    """:func:`set_decoding` inside the block, restored afterwards."""
    previous = set_decoding(policy, settings, task)
    try:
        yield
    finally:
        policy.decoding = previous


def _by_task(problems: Sequence[Problem], order: Sequence[str]) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {task: [] for task in order}
    for problem in problems:
        out.setdefault(problem.env, []).append(problem)
    return {task: probs for task, probs in out.items() if probs}


def collect_rollouts(
    policy: Any,
    envs: Mapping[str, Any],
    problems: Sequence[Problem],
    config: Any,
    *,
    forcing_rng: np.random.Generator,
    generator: torch.Generator,
) -> list[GroupBatch]:
    """Scored groups of ``problems``, one part per task (tree search or answer forcing per config)."""
    from agents.diffusion.tree import tree_rollout

    forcing = ForcingConfig.from_config(config)
    parts = []
    for task, probs in _by_task(problems, list(config.tasks)).items():
        with use_decoding(policy, config.decoding_for(task), task):
            if config.uses_tree_search(task):
                part = tree_rollout(policy, envs, probs, config.num_generations,
                                    branch_steps=config.tree_branch_steps, generator=generator)  # fmt: skip
            else:
                part = collect_groups(policy, envs, probs, config.num_generations, forcing=forcing,
                                      rng=forcing_rng, generator=generator)  # fmt: skip
        parts.append(part)
    return parts


def rollout_advantages(parts: Sequence[GroupBatch], gamma: float, scale_rewards: str) -> torch.Tensor:
    """LaViDa-R1 rollout weights (R,) over all parts' rows, in order."""
    rewards, group_ids = batch_rewards(parts)
    return mix_advantages(gamma, distill_advantages(rewards, group_ids), grpo_advantages(rewards, group_ids, scale_rewards))


def sft_rollouts(
    policy: Any, envs: Mapping[str, Any], problems: Sequence[Problem], order: Sequence[str], teacher_error: float = 0.0
) -> list[Rollouts]:
    """Reference-solution rows of ``problems``, one :class:`Rollouts` per task (``policy.sft_rollouts``).

    ``teacher_error > 0``: the references of :func:`agents.teacher.teacher_solution` (wrong facts off by one).
    """
    from agents.sft import reference_action
    from agents.teacher import teacher_solution

    out = []
    for task, probs in _by_task(problems, order).items():
        groups, observations = open_problems(envs, probs)
        targets = [reference_action(envs[g["env"]], g) for g in groups]
        if teacher_error:
            targets = [teacher_solution(t, teacher_error) if isinstance(t, str) else t for t in targets]
        out.append(policy.sft_rollouts(observations, targets))
    return out


@dataclass
class Likelihood:
    """One likelihood call: per-row estimates, per-position terms (if the policy gives them), scored positions."""

    loglik: torch.Tensor  # (B,) with gradients
    token_logp: torch.Tensor | None  # (B, L) contributions summing to loglik, or None
    scored: torch.Tensor  # (B, L) bool: the positions the estimate covers

    @property
    def counts(self) -> torch.Tensor:
        """Scored positions per row (B,), on the device of ``loglik``."""
        return self.scored.sum(1).to(self.loglik.device)


def likelihood(
    policy: Any, rollouts: Rollouts, estimator: str, mask_seed: int, samples: int = 1, prompt_mask_prob: float = 0.0
) -> Likelihood:
    """The policy's log-likelihood estimate of ``rollouts`` (module docstring); ``prompt_mask_prob``: d1's."""
    scored = policy.scored_mask(rollouts).to(torch.bool)
    extra = {"prompt_mask_prob": prompt_mask_prob} if prompt_mask_prob else {}
    estimate = policy.log_likelihood_terms(rollouts, estimator, mask_seed, samples, **extra)
    return Likelihood(estimate.loglik, estimate.token_logp, scored)


class NLLMeter:
    """Per-token NLL sums of text and image-code response positions over several likelihood calls."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, rollouts: Rollouts, result: Likelihood) -> None:
        """Count one call's rows (without ``token_logp`` every scored position counts as text)."""
        scored = result.scored.cpu()
        if result.token_logp is None:
            self.sums["text"] -= float(result.loglik.detach().sum())
            self.counts["text"] += int(scored.sum())
            return
        code = rollouts.extras.get("code_mask")
        image = torch.zeros_like(scored) if code is None else code.to(torch.bool).cpu() & scored
        logp = result.token_logp.detach().cpu()
        for name, where in (("text", scored & ~image), ("image", image)):
            self.sums[name] -= float(logp[where].sum())
            self.counts[name] += int(where.sum())

    def metrics(self) -> dict[str, float]:
        """``{"nll/text", "nll/image"}`` (NaN where no position was scored)."""
        return {f"nll/{k}": self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in ("text", "image")}


def evaluate(
    policy: Any, envs: Mapping[str, Any], config: Any, rank: int = 0, world: int = 1, batch_size: int = 16
) -> dict[str, list[tuple[float, bool]]]:
    """Greedy held-out ``(reward, correct)`` per task on this rank's share of the test problems."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for task, env in envs.items():
        share = pad_shares(range(config.eval_episodes), rank, world)  # equal length on every rank (equal forwards)
        results: list[tuple[float, bool]] = []
        with use_decoding(policy, {**config.decoding_for(task), "temperature": 0.0}, task):
            for begin in range(0, len(share), batch_size):
                chunk = share[begin : begin + batch_size]
                problems = [Problem(task, i) for i, _ in chunk]
                _, observations = open_problems(envs, problems)
                actions = policy.act(observations, 1)
                for problem, (_, real), action in zip(problems, chunk, actions):
                    if real:  # padding items are decoded with the others and dropped here
                        (res,) = score_actions(env, problem.index, action[:1]).steps
                        results.append((res.reward, res.correct))
        out[task] = results
    return out
