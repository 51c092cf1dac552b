"""``LaViDa/MultiTask-v0``: a weighted mixture of VisualMath, Grounding and ImageEdit.

One observation space for all (``{"image": uint8[S, S, 3], "prompt": str}``, every
sub-task built with the same ``image_size``) and one action space that covers what every
episode accepts: with image edit and a text task in the mix it is
:class:`~lavida_envs.spaces.TextOrEditAction` -- ``Dict(text=Text, image=Box(uint8, (S, S,
3)))`` whose ``contains`` also accepts a plain ``str`` (a vector env takes a list of either
form); a text-only mix has ``Text``, an edit-only mix the ``Dict``. Text tasks read only
``action["text"]`` of a dict (a plain ``str`` works for every task; for image edit it scores
0 for the image part). ``info["task"]`` names the sub-task of the episode and
``info["task_index"]`` the problem's index inside it; ``info["reference_action"]`` is a
complete action scoring full reward (:meth:`MultiTaskEnv.reference_action` gives its form).

Kwargs (besides ``split``, ``difficulty``, ``image_size``, ``render_mode``, which every
sub-task shares):

* ``tasks``: ``{name: weight}`` over ``visual_math``, ``grounding``, ``image_edit``
  (default: equal weights); weight 0 drops a task.
* ``visual_math=``, ``grounding=``, ``image_edit=``: dicts of kwargs passed through to that
  sub-task (e.g. ``grounding={"box_format": "norm1000"}``, ``image_edit={"edit_reward":
  "clip", "clip_path": DIR}``, ``visual_math={"reward": {"format": 0.2}}``, or a real
  dataset ``image_edit={"dataset": "magicbrush", "data_dir": DIR}``).

Problem ``i`` (deterministic, the same on every machine): the sub-task is drawn by the
weights from ``u = stable_seed("multitask", "task", i) / 2**64`` (so the weights are part
of what fixes problem ``i``), and the sub-task's own index is
``stable_seed("multitask", "index", i) mod 2**31`` (mod the dataset size for a
dataset-backed sub-task). Every sub-task is built with this env's ``split``, so split
separation carries over. Reward, ``correct`` and the components are the sub-task's own
(see each task's docstring); the env is nondeterministic if any sub-task is.
"""

from __future__ import annotations

import bisect
import importlib
import random
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from lavida_envs.base import CHARSET, MAX_ACTION_CHARS, Problem, Score, TaskEnv, stable_seed
from lavida_envs.spaces import TextOrEditAction

__all__ = ["MultiTaskEnv", "SUBTASKS"]

#: Sub-task name -> "module:Class" of its env.
SUBTASKS: dict[str, str] = {
    "visual_math": "lavida_envs.tasks.visual_math:VisualMathEnv",
    "grounding": "lavida_envs.tasks.grounding:GroundingEnv",
    "image_edit": "lavida_envs.tasks.image_edit:ImageEditEnv",
}
_SUB_INDEX_RANGE = 2**31


def _load(entry: str) -> type[TaskEnv]:
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


class MultiTaskEnv(TaskEnv):
    """Weighted mixture of the LaViDa tasks with one observation and one action space."""

    task_name: ClassVar[str] = "multitask"
    default_reward_weights: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        split: str = "train",
        difficulty: int | str = "mixed",
        image_size: int = 128,
        dataset: str | None = None,
        data_dir: str | None = None,
        reward: dict[str, float] | None = None,
        render_mode: str | None = None,
        tasks: dict[str, float] | None = None,
        **task_kwargs: dict[str, Any],
    ) -> None:
        if dataset is not None or data_dir is not None:
            raise ValueError("MultiTask takes real datasets per sub-task, e.g. image_edit={'dataset': ..., 'data_dir': ...}")
        if reward is not None:
            raise ValueError("MultiTask reward weights are per sub-task, e.g. grounding={'reward': {'format': 0.2}}")
        unknown = sorted(set(task_kwargs) - set(SUBTASKS))
        if unknown:
            raise TypeError(f"unknown MultiTask kwargs {unknown}; per-task kwargs go in {sorted(SUBTASKS)} dicts")
        weights = dict.fromkeys(SUBTASKS, 1.0) if tasks is None else dict(tasks)
        bad = {k: v for k, v in weights.items() if k not in SUBTASKS or not _is_weight(v)}
        if bad or not any(float(v) > 0 for v in weights.values()):
            raise ValueError(
                f"tasks must map names in {sorted(SUBTASKS)} to weights >= 0 with a positive sum, got {tasks!r}"
            )
        self.task_weights = {k: float(v) / sum(weights.values()) for k, v in weights.items() if float(v) > 0}
        self._names = sorted(self.task_weights)
        self._cumulative = list(np.cumsum([self.task_weights[n] for n in self._names]))
        super().__init__(split, difficulty, image_size, None, None, None, render_mode)
        self.sub_envs: dict[str, TaskEnv] = {}
        for name in self._names:
            kwargs = dict(task_kwargs.get(name) or {})
            clash = sorted(set(kwargs) & {"split", "difficulty", "image_size", "render_mode"})
            if clash:
                raise ValueError(f"{name}={{...}} may not set {clash}: MultiTask sets them for every sub-task")
            self.sub_envs[name] = _load(SUBTASKS[name])(
                split=split, difficulty=difficulty, image_size=image_size, **kwargs
            )
        self.nondeterministic = any(env.nondeterministic for env in self.sub_envs.values())
        self._task: str | None = None

    def make_action_space(self) -> spaces.Space:
        """What the mixture's episodes accept (see the module docstring).

        Text tasks only: ``Text`` (like VisualMath / Grounding). Image edit only:
        ``Dict(text=Text, image=Box(uint8, (S, S, 3)))`` (like ImageEdit). Both:
        :class:`~lavida_envs.spaces.TextOrEditAction`, that Dict which also contains a
        ``str``, so ``action_space.contains("<answer>...</answer>")`` is True and a vector env
        takes a list with one str or dict action per env.
        """
        text = spaces.Text(MAX_ACTION_CHARS, min_length=0, charset=CHARSET)
        if "image_edit" not in self.task_weights:
            return text
        image = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        if len(self.task_weights) == 1:
            return spaces.Dict({"text": text, "image": image})
        return TextOrEditAction(text, image)

    # ----- the mixture ------------------------------------------------------------------
    def task_of(self, index: int) -> tuple[str, int]:
        """``(sub-task name, its index)`` of mixture problem ``index``."""
        index = int(index)
        if index < 0:
            raise ValueError(f"problem index must be >= 0, got {index}")
        u = stable_seed(self.task_name, "task", index) / 2**64
        name = self._names[min(bisect.bisect_right(self._cumulative, u), len(self._names) - 1)]
        sub_index = stable_seed(self.task_name, "index", index) % _SUB_INDEX_RANGE
        size = self.sub_envs[name].num_problems()
        return name, sub_index % size if size else sub_index

    def problem(self, index: int) -> Problem:
        """Mixture problem ``index``: the chosen sub-task's problem (its ``meta`` side doors included)."""
        name, sub_index = self.task_of(index)
        return self.sub_envs[name].problem(sub_index)

    def spec_for(self, index: int) -> tuple[tuple[str, Any], random.Random, int]:
        """``((sub-task, its spec), rng, level)`` of mixture problem ``index`` (procedural sub-tasks)."""
        name, sub_index = self.task_of(index)
        spec, rng, level = self.sub_envs[name].spec_for(sub_index)
        return (name, spec), rng, level

    def build_problem(self, spec: tuple[str, Any], rng: random.Random, difficulty: int) -> Problem:
        """Build a ``(sub-task, spec)`` pair from :meth:`spec_for` with that sub-task."""
        name, sub_spec = spec
        return self.sub_envs[name].build_problem(sub_spec, rng, difficulty)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``info["task"]`` names the sub-task, ``info["task_index"]`` its index."""
        obs, info = super().reset(seed=seed, options=options)
        self._task, sub_index = self.task_of(info["index"])
        info["task"], info["task_index"] = self._task, sub_index
        return obs, info

    def _reset_info(self, problem: Problem, index: int) -> dict[str, Any]:
        self._task = self.task_of(index)[0]  # so reference_action (called inside) knows the sub-task
        return super()._reset_info(problem, index)

    def reference_action(self, problem: Problem) -> Any:
        """The episode's sub-task's reference action, in one form for the whole mixture.

        With image edit and a text task in the mix every reference is a ``{"text", "image"}``
        dict in the action space (a vector env merges each info key across envs, and cannot
        mix a str with a dict): ``{"text": solution, "image": target}`` for edits and
        ``{"text": solution, "image": zeros}`` for text tasks, which read only the text (the
        zero image is a placeholder, not a target: ``info["task"]`` tells them apart). A vector
        env's merged ``info["reference_action"]`` is then a batched action ``step`` takes.
        Otherwise the sub-task's own form (text, or the edit dict).
        """
        action = self.sub_envs[self._current()].reference_action(problem)
        if isinstance(self.action_space, TextOrEditAction) and isinstance(action, str):
            return {"text": action, "image": np.zeros((self.image_size, self.image_size, 3), np.uint8)}
        return action

    def score(self, action: Any, problem: Problem) -> Score:
        """The current sub-task's score (text tasks read ``action["text"]``)."""
        return self.sub_envs[self._current()].score(action, problem)

    def total_reward(self, components: dict[str, float]) -> float:
        """The current sub-task's weighted sum."""
        return self.sub_envs[self._current()].total_reward(components)

    def step(self, action: Any):
        """Score ``action`` with the episode's sub-task; ``info["task"]`` names it."""
        obs, reward, terminated, truncated, info = super().step(action)
        info["task"] = self._current()
        # keyed by task: sub-tasks parse to different types (a box list, a dict, a string), and a
        # vector env merges each info key across envs, which fails on a list/dict mix
        info["parsed"] = {info["task"]: info["parsed"]}
        return obs, reward, terminated, truncated, info

    def _current(self) -> str:
        if self._task is None:
            raise RuntimeError("call reset() before step()")
        return self._task


def _is_weight(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and (
        np.isfinite(float(value)) and float(value) >= 0
    )
