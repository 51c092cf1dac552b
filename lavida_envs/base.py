"""`TaskEnv`: the single-step Gymnasium environment every LaViDa task builds on.

Contract (docs/design.md, "Layers" and "Public API"):

* One episode is one problem. ``reset`` returns ``{"image": uint8[S, S, 3], "prompt": str}``
  and an ``info`` dict with ``task``, ``index``, ``difficulty``, ``source``, ``answer``,
  ``solution`` (reference text) and ``reference_action`` (a complete action scoring full
  reward: the text, or for image edit ``{"text", "image"}``); ``step(action)`` scores the
  action and ends the episode (``terminated=True``) with ``info`` holding
  ``reward_components``, ``correct``, ``metrics``, ``parsed`` and ``error``.
* ``reset(options={"index": i})`` gives the same problem for the same
  ``(split, difficulty, i)`` on every machine whatever the seed; without an index the
  seeded RNG picks one.
* Train and test never share a problem: each problem has a canonical ``key`` (its
  semantic content, not its layout) and the split of a key is fixed by a hash of it,
  so a generator simply redraws until the key falls in the requested split.
* Reward = sum of weighted components, each in [0, 1]; the weights come from the
  task's defaults updated by the ``reward`` kwarg.
* Bad actions never crash a run: anything the scorer cannot handle scores 0 with the
  reason in ``info["error"]``.

A task subclass provides ``sample_spec`` (cheap: draw the problem's content and key),
``build_problem`` (render it) and ``score`` (reward components for an action).
Real-benchmark tasks pass a list of :class:`Problem` through ``dataset=``/``data_dir=``.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lavida_envs.spaces import PromptText

__all__ = [
    "CHARSET",
    "MAX_ACTION_CHARS",
    "Problem",
    "Score",
    "TaskEnv",
    "coerce_text",
    "split_of_key",
    "stable_seed",
]

#: Characters allowed in prompts (and in the Text spaces). Prompts must stay inside it.
CHARSET: str = "".join(sorted(set(string.printable + "°√π×÷−≤≥≠∠△⊥∥…·²³½¼¾∞")))
#: Longest prompt an observation may carry.
MAX_PROMPT_CHARS = 2048
#: Actions longer than this score 0 without being parsed.
MAX_ACTION_CHARS = 16384
#: Control characters dropped from actions (newline and tab are kept).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: Share of problem keys that belong to the test split.
TEST_FRACTION = 0.2
#: A generator must produce a problem of the wanted split within this many draws.
MAX_DRAWS = 400


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from ``parts`` that is the same on every machine and Python run."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def split_of_key(key: str, test_fraction: float = TEST_FRACTION) -> str:
    """The split ('train' or 'test') a problem key belongs to, fixed by a hash of the key."""
    bucket = stable_seed("split", key) % 10_000
    return "test" if bucket < int(test_fraction * 10_000) else "train"


def coerce_text(action: Any) -> tuple[str | None, str | None]:
    """Turn any action into clean text: ``(text, None)`` or ``(None, reason)``.

    Accepts ``str``, ``bytes`` and ``{"text": ...}`` dicts. Invalid UTF-8 and lone
    surrogates are replaced, control characters (except newline and tab) dropped.
    """
    if isinstance(action, dict):
        action = action.get("text", "")
    if isinstance(action, (bytes, bytearray)):
        action = bytes(action).decode("utf-8", errors="replace")
    if not isinstance(action, str):
        return None, f"action must be a str (or {{'text': str}}), got {type(action).__name__}"
    if len(action) > MAX_ACTION_CHARS:
        return None, f"action too long: {len(action)} chars > cap {MAX_ACTION_CHARS}"
    text = action.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
    text = _CONTROL_CHARS.sub("", text)
    return text, None


@dataclass
class Problem:
    """One fully built problem: what the policy sees plus the gold and a reference solution."""

    prompt: str
    image: np.ndarray  # (S, S, 3) uint8
    answer: str
    solution: str
    difficulty: int
    key: str
    source: str = "procedural"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Score:
    """Reward components for one action, plus what was parsed and why it failed."""

    components: dict[str, float]
    correct: bool
    metrics: dict[str, float] = field(default_factory=dict)
    parsed: Any = None
    error: str | None = None


class TaskEnv(gym.Env):
    """Single-step multimodal reasoning env: one problem per episode, verifiable reward."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 1}
    task_name: ClassVar[str] = "task"
    env_version: ClassVar[str] = "0"
    num_difficulties: ClassVar[int] = 5
    default_reward_weights: ClassVar[dict[str, float]] = {"accuracy": 0.9, "format": 0.1}
    #: True when scoring may differ between calls (e.g. a VLM judge).
    nondeterministic: bool = False

    def __init__(
        self,
        split: str = "train",
        difficulty: int | str = "mixed",
        image_size: int = 128,
        dataset: str | None = None,
        data_dir: str | None = None,
        reward: dict[str, float] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if difficulty != "mixed" and not (
            isinstance(difficulty, (int, np.integer)) and 1 <= int(difficulty) <= self.num_difficulties
        ):
            raise ValueError(
                f"difficulty must be an int in 1..{self.num_difficulties} or 'mixed', got {difficulty!r}"
            )
        if not isinstance(image_size, (int, np.integer)) or not 16 <= int(image_size) <= 2048:
            raise ValueError(f"image_size must be an int in 16..2048, got {image_size!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.split = split
        self.difficulty = difficulty if difficulty == "mixed" else int(difficulty)
        self.image_size = int(image_size)
        self.render_mode = render_mode
        weights = dict(self.default_reward_weights)
        for name, value in (reward or {}).items():
            if name not in weights:
                raise ValueError(
                    f"unknown reward component {name!r} for {self.task_name}; known: {sorted(weights)}"
                )
            weights[name] = float(value)
        self.reward_weights = weights
        self.dataset = dataset
        self.data_dir = data_dir
        self._dataset_problems: list[Problem] | None = None
        if dataset is not None:
            problems = self.load_dataset(dataset, data_dir, split)
            if not problems:
                raise ValueError(
                    f"dataset {dataset!r} in {data_dir!r} has no {split!r} problems"
                    + (f" at difficulty {self.difficulty}" if self.difficulty != "mixed" else "")
                    + "; try the other split or check the data directory"
                )
            self._dataset_problems = problems
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                "prompt": PromptText(MAX_PROMPT_CHARS, min_length=0, charset=CHARSET),
            }
        )
        self.action_space = self.make_action_space()
        self._problem: Problem | None = None
        self._index: int | None = None

    # ----- hooks for tasks ---------------------------------------------------------
    def make_action_space(self) -> spaces.Space:
        """The action space; text by default."""
        return spaces.Text(MAX_ACTION_CHARS, min_length=0, charset=CHARSET)

    def sample_spec(self, rng: random.Random, difficulty: int) -> Any:
        """Draw a problem's content (cheap, no rendering); the result has a ``key`` attribute."""
        raise NotImplementedError

    def build_problem(self, spec: Any, rng: random.Random, difficulty: int) -> Problem:
        """Render a drawn spec into a :class:`Problem` (``rng`` continues for layout)."""
        raise NotImplementedError

    def score(self, action: Any, problem: Problem) -> Score:
        """Reward components for ``action`` on ``problem``."""
        raise NotImplementedError

    def reference_action(self, problem: Problem) -> Any:
        """A complete action that scores full reward on ``problem`` (reset's ``info["reference_action"]``).

        Text tasks: the reference solution text; tasks whose action has more parts override.
        """
        return problem.solution

    def load_dataset(self, name: str, data_dir: str | None, split: str) -> list[Problem]:
        """Problems of a real benchmark from local files (tasks that support it override)."""
        raise ValueError(f"{self.task_name} has no real-benchmark loader for dataset={name!r}")

    # ----- deterministic problem access -------------------------------------------
    def level_of(self, index: int) -> int:
        """The difficulty level of problem ``index`` (fixed, or drawn per index when mixed)."""
        if self.difficulty != "mixed":
            return int(self.difficulty)
        return 1 + stable_seed(self.task_name, "level", index) % self.num_difficulties

    def problem(self, index: int) -> Problem:
        """Problem ``index`` of this env's split and difficulty; identical on every machine."""
        index = int(index)
        if index < 0:
            raise ValueError(f"problem index must be >= 0, got {index}")
        if self._dataset_problems is not None:
            if index >= len(self._dataset_problems):
                raise IndexError(
                    f"index {index} out of range: dataset {self.dataset!r} has "
                    f"{len(self._dataset_problems)} {self.split!r} problems"
                )
            return self._dataset_problems[index]
        spec, rng, level = self.spec_for(index)
        problem = self.build_problem(spec, rng, level)
        self._check_problem(problem)
        return problem

    def spec_for(self, index: int) -> tuple[Any, random.Random, int]:
        """The drawn spec of procedural problem ``index``, the RNG that renders it, and its level."""
        index = int(index)
        level = self.level_of(index)
        for draw in range(MAX_DRAWS):
            rng = random.Random(stable_seed(self.task_name, self.env_version, level, index, draw))
            spec = self.sample_spec(rng, level)
            if split_of_key(f"{self.task_name}|{spec.key}") == self.split:
                return spec, rng, level
        raise RuntimeError(
            f"{self.task_name}: no {self.split!r} problem found for index {index} at difficulty "
            f"{level} in {MAX_DRAWS} draws; the generator's key space is too small"
        )

    def num_problems(self) -> int | None:
        """Number of problems for dataset-backed envs; None for procedural (unbounded)."""
        return None if self._dataset_problems is None else len(self._dataset_problems)

    def _check_problem(self, problem: Problem) -> None:
        img = problem.image
        if img.dtype != np.uint8 or img.shape != (self.image_size, self.image_size, 3):
            raise AssertionError(
                f"{self.task_name} built an image of dtype {img.dtype} shape {img.shape}; "
                f"expected uint8 {(self.image_size, self.image_size, 3)}"
            )
        bad = set(problem.prompt) - set(CHARSET)
        if bad:
            raise AssertionError(f"{self.task_name} prompt uses characters outside CHARSET: {sorted(bad)}")

    # ----- Gymnasium API -----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on problem ``options["index"]`` (or one the seeded RNG picks)."""
        super().reset(seed=seed)
        options = options or {}
        if "index" in options and options["index"] is not None:
            index = int(options["index"])
        else:
            high = self.num_problems() or 2**31 - 1
            index = int(self.np_random.integers(0, high))
        problem = self.problem(index)
        self._problem, self._index = problem, index
        return self._observation(problem), self._reset_info(problem, index)

    def step(self, action: Any):
        """Score ``action`` against the current problem; the episode always ends."""
        if self._problem is None:
            raise RuntimeError("call reset() before step()")
        problem = self._problem
        try:
            result = self.score(action, problem)
        except Exception as exc:  # a scorer bug must not take a training run down
            result = Score(
                components={name: 0.0 for name in self.reward_weights},
                correct=False,
                error=f"scorer failed: {type(exc).__name__}: {str(exc)[:200]}",
            )
        reward = self.total_reward(result.components)
        info = {
            "task": self.task_name,
            "index": self._index,
            "difficulty": problem.difficulty,
            "reward_components": dict(result.components),
            "correct": bool(result.correct),
            "metrics": dict(result.metrics),
            "parsed": result.parsed,
            "error": result.error,
        }
        return self._observation(problem), reward, True, False, info

    def total_reward(self, components: dict[str, float]) -> float:
        """Weighted sum of the components (missing ones count 0)."""
        return float(sum(w * float(components.get(name, 0.0)) for name, w in self.reward_weights.items()))

    def render(self) -> np.ndarray | None:
        """The current problem's image (render_mode 'rgb_array')."""
        if self.render_mode != "rgb_array" or self._problem is None:
            return None
        return self._problem.image.copy()

    def _observation(self, problem: Problem) -> dict[str, Any]:
        return {"image": problem.image.copy(), "prompt": problem.prompt}

    def _reset_info(self, problem: Problem, index: int) -> dict[str, Any]:
        return {
            "task": self.task_name,
            "index": index,
            "split": self.split,
            "difficulty": problem.difficulty,
            "source": problem.source,
            "answer": problem.answer,
            "solution": problem.solution,
            "reference_action": self.reference_action(problem),
        }

