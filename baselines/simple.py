"""Simple reference policies: random, constant and oracle (floors and ceilings for the leaderboard).

Every class implements :class:`agents.policy.Policy`: ``act(observations, num_samples=1) ->
list[list[action]]`` with ``observations`` the env's ``{"image": uint8[H, W, 3], "prompt": str}``.

* :class:`RandomPolicy` -- well-formed random answers: ``<think>..</think><answer>N</answer>``
  with a random small integer (or a random listed option letter for multiple choice); a random
  box inside the image in the convention the grounding prompt asks for; a random image plus
  text for edit prompts. Seeded and deterministic per ``(seed, observation content, sample
  number)``, so results do not depend on batching or order.
* :class:`ConstantPolicy` -- the same text for every observation; for edit prompts the image
  part is the unedited source image (``echo_image=True``, the "do nothing" edit) or absent.
* :class:`OraclePolicy` -- the env's reference action (reset's ``info["reference_action"]``:
  the solution text; for edits ``{"text": solution, "image": target}``). Policies never see
  ``info``; the oracle reads the gold through a documented side door: ``oracle.prepare(env, indices)`` resets a single
  (non-vector) env built with the evaluation's kwargs on those indices and remembers
  ``hash(prompt, image) -> gold action``; ``act`` looks each observation up. The evaluator
  calls ``policy.prepare(env, indices)`` on any policy that has it, before acting. For
  ceilings and tests only.

Task detection (:func:`detect_task`): an explicit ``task=``, else the observation's ``"task"``
key, else the prompt wording of the env prompt builders (``lavida_envs.tasks.*``): edit
prompts say "Edit the image as instructed" / "edited image", grounding prompts ask for a
"bounding box" "[x1, y1, x2, y2]"; everything else is answered like visual math.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable

import numpy as np

from lavida_envs.base import stable_seed
from lavida_envs.rewards.grounding import format_box

__all__ = [
    "ConstantPolicy",
    "OraclePolicy",
    "RandomPolicy",
    "TASKS",
    "detect_task",
    "observation_key",
]

TASKS: tuple[str, ...] = ("visual_math", "grounding", "image_edit")
#: task -> lower-case prompt substrings that identify it (same wording as the env prompt builders)
_MARKERS: dict[str, tuple[str, ...]] = {
    "image_edit": ("edit the image as instructed", "edited image"),
    "grounding": ("bounding box", "[x1, y1, x2, y2]"),
}
_OPTION = re.compile(r"^\s*([A-H])\)\s", re.MULTILINE)
_PIXEL = re.compile(r"pixel coordinates of this (\d+)x(\d+) image")
DEFAULT_CONSTANT = "<think></think><answer>0</answer>"


def detect_task(observation: dict, task: str | None = None) -> str:
    """``task`` if given, else the observation's ``"task"`` key, else the task its prompt asks for."""
    for name in (task, observation.get("task")):
        if isinstance(name, str) and name:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
            return name
    prompt = str(observation.get("prompt", "")).lower()
    for name, markers in _MARKERS.items():
        if any(marker in prompt for marker in markers):
            return name
    return "visual_math"


def observation_key(observation: dict) -> str:
    """A hex digest of the observation's content (prompt text and image bytes, shape, dtype)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(observation.get("prompt", "")).encode("utf-8", errors="replace"))
    image = observation.get("image")
    if image is not None:
        arr = np.ascontiguousarray(np.asarray(image))
        h.update(f"|{arr.shape}|{arr.dtype}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def box_format_of(prompt: str) -> str:
    """The box convention a grounding prompt asks for: ``pixel``, ``norm1000`` or ``norm1``."""
    text = prompt.lower()
    if "normalized to 0-1000" in text:
        return "norm1000"
    if "normalized to 0-1 " in text or "normalized to 0-1." in text:
        return "norm1"
    return "pixel"


def _image_hw(observation: dict) -> tuple[int, int]:
    image = observation.get("image")
    if image is not None and np.ndim(image) == 3:
        return int(np.shape(image)[0]), int(np.shape(image)[1])
    match = _PIXEL.search(str(observation.get("prompt", "")))
    return (int(match.group(2)), int(match.group(1))) if match else (128, 128)


class RandomPolicy:
    """Valid-format random answers; deterministic per (seed, observation content, sample)."""

    def __init__(self, seed: int = 0, task: str | None = None, max_integer: int = 20) -> None:
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be None or one of {TASKS}, got {task!r}")
        self.seed, self.task, self.max_integer = int(seed), task, int(max_integer)

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[Any]]:
        """``num_samples`` random well-formed actions per observation."""
        _check_samples(num_samples)
        out = []
        for obs in observations:
            key = observation_key(obs)
            rngs = [np.random.default_rng(stable_seed("random-policy", self.seed, key, j)) for j in range(num_samples)]
            out.append([self._one(obs, rng) for rng in rngs])
        return out

    def _one(self, obs: dict, rng: np.random.Generator) -> Any:
        task = detect_task(obs, self.task)
        prompt = str(obs.get("prompt", ""))
        if task == "grounding":
            h, w = _image_hw(obs)
            x1, x2 = sorted(rng.choice(w + 1, size=2, replace=False).tolist()) if w >= 1 else (0, 1)
            y1, y2 = sorted(rng.choice(h + 1, size=2, replace=False).tolist()) if h >= 1 else (0, 1)
            box = format_box((x1, y1, x2, y2), box_format_of(prompt), w, h)
            return f"<think>A random guess.</think><answer>{box}</answer>"
        if task == "image_edit":
            h, w = _image_hw(obs)
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            return {"text": "<think>A random guess.</think><answer>a random edit</answer>", "image": image}
        letters = _OPTION.findall(prompt)
        guess = str(rng.choice(sorted(set(letters)))) if letters else str(int(rng.integers(0, self.max_integer + 1)))
        return f"<think>A random guess.</think><answer>{guess}</answer>"

    def __repr__(self) -> str:
        return f"RandomPolicy(seed={self.seed}, task={self.task!r})"


class ConstantPolicy:
    """The same text for every observation (edit prompts: plus the unedited source image)."""

    def __init__(self, text: str = DEFAULT_CONSTANT, echo_image: bool = True, task: str | None = None) -> None:
        if not isinstance(text, str):
            raise TypeError(f"ConstantPolicy text must be a str, got {type(text).__name__}")
        self.text, self.echo_image, self.task = text, bool(echo_image), task

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[Any]]:
        """``num_samples`` copies of the constant action per observation."""
        _check_samples(num_samples)
        out = []
        for obs in observations:
            if self.echo_image and detect_task(obs, self.task) == "image_edit" and obs.get("image") is not None:
                image = np.asarray(obs["image"])
                out.append([{"text": self.text, "image": image.copy()} for _ in range(num_samples)])
            else:
                out.append([self.text] * num_samples)
        return out

    def __repr__(self) -> str:
        return f"ConstantPolicy(text={self.text!r}, echo_image={self.echo_image})"


class OraclePolicy:
    """Reference solutions looked up by observation content; fill it with :meth:`prepare` first."""

    def __init__(self, env: Any = None, indices: Iterable[int] | None = None) -> None:
        self._gold: dict[str, Any] = {}
        self.conflicts = 0  # observations seen twice with different gold (the first one is kept)
        if env is not None:
            if indices is None:
                raise ValueError("OraclePolicy(env, indices): pass the problem indices being evaluated")
            self.prepare(env, indices)

    def prepare(self, env: Any, indices: Iterable[int]) -> None:
        """Side door: reset ``env`` (one env, not a vector env) on each index and remember its gold."""
        base = getattr(env, "unwrapped", env)
        if not hasattr(base, "reset") or hasattr(base, "num_envs"):
            raise TypeError(f"OraclePolicy.prepare needs one (non-vector) env, got {type(env).__name__}")
        for index in indices:
            obs, info = base.reset(options={"index": int(index)})
            action = self._gold_action(base, int(index), info)
            key = observation_key(obs)
            if key in self._gold and not _same_action(self._gold[key], action):
                self.conflicts += 1
                continue
            self._gold.setdefault(key, action)

    @staticmethod
    def _gold_action(base: Any, index: int, info: dict) -> Any:
        action = info.get("reference_action", info.get("solution"))
        if isinstance(action, dict) and info.get("task") != "image_edit":  # a mixture's text task: the text
            action = action.get("text")
        if not isinstance(action, (str, dict)) or (isinstance(action, dict) and not isinstance(action.get("text"), str)):
            raise ValueError(
                f"env {type(base).__name__} gave no usable info['reference_action'] (or str info['solution']) "
                f"for index {index}, got {action!r:.80}"
            )
        return _copy_action(action)

    def __len__(self) -> int:
        return len(self._gold)

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[Any]]:
        """The remembered gold action for each observation, ``num_samples`` times."""
        _check_samples(num_samples)
        out = []
        for obs in observations:
            action = self._gold.get(observation_key(obs))
            if action is None:
                raise KeyError(
                    f"OraclePolicy has no gold for this observation (prompt {str(obs.get('prompt', ''))[:60]!r}...); "
                    "call oracle.prepare(env, indices) with the env and problem indices being evaluated"
                )
            out.append([_copy_action(action) for _ in range(num_samples)])
        return out

    def __repr__(self) -> str:
        return f"OraclePolicy({len(self._gold)} prepared observations)"


def _copy_action(action: Any) -> Any:
    if isinstance(action, dict):
        return {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in action.items()}
    return action


def _same_action(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.get("text") == b.get("text") and np.array_equal(a.get("image"), b.get("image"))
    return a == b


def _check_samples(num_samples: int) -> None:
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
