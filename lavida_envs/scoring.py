"""The one episode scorer: reset a problem by index, then score actions against it.

Trainers (rollouts, tree search, held-out evaluation) and ``lavida eval`` all score
actions here (docs/design.md, "The one-sample walk"):

* :func:`score_actions` -- ``env.reset(options={"index": i})`` once, then ``env.step(a)``
  for each action ``a``: a :class:`ScoredEpisode` with the reset observation and info and one
  :class:`StepResult` per action, in order.
* One reset serves a whole group: :meth:`lavida_envs.base.TaskEnv.step` scores against the
  problem ``reset`` built and changes nothing, so stepping K actions after one reset gives the
  same rewards and infos as K separate ``reset(index)`` + ``step`` episodes (tests/test_scoring.py
  checks it on every registered env). An env that is not a ``TaskEnv`` underneath is reset
  before every action, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from lavida_envs.base import TaskEnv

__all__ = ["ScoredEpisode", "StepResult", "score_actions"]


@dataclass
class StepResult:
    """What the env said about one action: reward, ``correct``, ``reward_components`` and the whole step info."""

    reward: float
    correct: bool
    components: dict[str, float]
    info: dict[str, Any]


@dataclass
class ScoredEpisode:
    """Problem ``index`` as reset (observation, info) and the result of every action scored on it."""

    index: int
    observation: dict[str, Any]
    reset_info: dict[str, Any]
    steps: list[StepResult] = field(default_factory=list)


def score_actions(env: Any, index: int, actions: Sequence[Any]) -> ScoredEpisode:
    """Reset problem ``index`` once and score each action against it (module docstring)."""
    index = int(index)
    observation, reset_info = env.reset(options={"index": index})
    one_reset = isinstance(getattr(env, "unwrapped", env), TaskEnv)
    episode = ScoredEpisode(index, observation, reset_info)
    for k, action in enumerate(actions):
        if k and not one_reset:
            env.reset(options={"index": index})
        _, reward, _, _, info = env.step(action)
        components = dict(info.get("reward_components", {}))
        episode.steps.append(StepResult(float(reward), bool(info.get("correct", False)), components, info))
    return episode
