"""`LaViDa/Grounding-v0`: find the one shape a reason-intensive referring expression names.

Observation: a procedural shape scene (``lavida_envs.scene``) and a prompt "Locate <the
expression>" that says which box convention to answer in. Action: text ending in
``<answer>[x1, y1, x2, y2]</answer>`` (the Qwen2.5-VL ``{"bbox_2d": [...]}`` form works too).

Difficulty levels (``lavida_envs.tasks.grounding_refgen``): 1 direct attribute, 2 spatial
relation, 3 ordinal/comparative, 4 counting/arithmetic, 5 two-hop compositions. Every
expression is proven to match exactly one shape of the scene graph before it is used.
Level 1 also fixes the layout: shapes of one size (``LEVEL1_SIZE``) centred in distinct
cells of a ``LEVEL1_GRID x LEVEL1_GRID`` grid, so a box is one of few values per cell and
kind, and its solution names the cell (``Step 1: The red circle is in row 2, column 3.``)
before the box in ``<answer>``. From level 2 on, positions and sizes are free (layout
jitter is a difficulty axis).
Splits are decided by the scene graph alone (``Scene.key()``), so no test image ever
appears in training, whatever expression is asked about it.

Kwargs (besides :class:`~lavida_envs.base.TaskEnv`'s):

* ``box_format``: how the model's numbers are read -- ``"pixel"`` (default; pixels of the
  observed ``S x S`` image, origin top-left, ``x2``/``y2`` exclusive), ``"norm1000"``
  (0..1000 of the side, Qwen2-VL style) or ``"norm1"`` (0..1). The gold is kept in pixels;
  ``info["answer"]`` and the reference solution are written in the env's convention.
* ``iou_floor``: accuracy = IoU when IoU >= the floor, else 0 (default
  :data:`~lavida_envs.rewards.grounding.DEFAULT_IOU_FLOOR` = 0.1, so a whole-image box
  cannot out-score random boxes; ``0.0`` -> the raw continuous IoU). Why: see
  :func:`lavida_envs.rewards.grounding.iou_accuracy`.
* ``iou_threshold``: ``None`` (default) -> the floored IoU above; a float ``t`` ->
  accuracy = 1 if IoU >= t else 0 (e.g. 0.5 for the paper's P@0.5 as a reward).
* ``min_shapes`` / ``max_shapes``: shapes per scene (default 3..9).
* ``grid`` (level 1): cells per side of the layout (default ``LEVEL1_GRID`` = 4);
  ``expression`` (level 1): ``"any"`` (default) or ``"color"`` ("the red shape" only). The CPU
  testbed level of docs/testbed.md ("CPU testbed levels of Grounding and ImageEdit") is level 1
  with ``grid=2, min_shapes=2, max_shapes=2, expression="color"``: a box is one of 4 values.
* ``dataset``: ``"refcoco"``, ``"refcoco+"``, ``"refcocog"`` or ``"reasonseg"`` (optionally
  ``":SUBSPLIT"``, e.g. ``"refcoco:testA"``) with ``data_dir`` -- real images letterboxed
  to ``image_size`` (see ``lavida_envs.datasets.refcoco`` / ``.reasonseg``).

Reward = ``w_acc * accuracy + w_fmt * format`` (weights in ``reward=``, defaults 0.9 / 0.1;
accuracy is shaped by ``iou_floor`` / ``iou_threshold``), where ``format`` is
:func:`lavida_envs.rewards.format.format_reward`. The predicted box is parsed by
:func:`lavida_envs.rewards.grounding.score_box_text` (one box only; converted to pixels,
clipped to the image, snapped to integers; several boxes, NaN/inf, reversed corners or an
empty box score 0 with ``info["error"]``). ``correct`` = IoU >= 0.5; ``metrics["iou"]``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lavida_envs.base import Problem, Score, TaskEnv, coerce_text, split_of_key
from lavida_envs.rewards.format import format_reward
from lavida_envs.rewards.grounding import BOX_FORMATS, DEFAULT_IOU_FLOOR, format_box, iou_accuracy, score_box_text
from lavida_envs.scene import Scene, render_scene, sample_grid_scene, sample_scene, shape_box
from lavida_envs.tasks.grounding_refgen import EXPRESSIONS, generate
from lavida_envs.tasks.grounding_refs import Ref, SidesCount

if TYPE_CHECKING:
    from lavida_envs.datasets.refcoco import GroundingSample

__all__ = [
    "GroundingEnv", "GroundingSpec", "build_grounding_problem", "grounding_prompt", "grounding_solution"]

_CONVENTION = {
    "pixel": "in pixel coordinates of this {s}x{s} image (origin at the top-left corner, x to the right, "
    "y down)",
    "norm1000": "in coordinates normalized to 0-1000 of the image width and height (origin at the "
    "top-left corner)",
    "norm1": "in coordinates normalized to 0-1 of the image width and height (origin at the top-left corner)",
}
_SIDES_NOTE = " Count a star as 10 sides and a circle as 0."
#: Level-1 layout: cells per side and the one shape size (half-extent, fraction of the side).
LEVEL1_GRID, LEVEL1_SIZE = 4, 0.085


def grounding_prompt(expression: str, image_size: int, box_format: str, note: str = "") -> str:
    """The task prompt: what to locate, the box convention and the output format."""
    convention = _CONVENTION[box_format].format(s=image_size)
    return (
        f"Locate {expression.strip()}.{note} Give its bounding box as [x1, y1, x2, y2] {convention}. "
        "Think step by step inside <think></think>, then give the box inside <answer></answer>."
    )


def grounding_solution(steps: Sequence[str], answer: str) -> str:
    """Reference solution: numbered steps in ``<think>``, then the box in ``<answer>``."""
    body = " ".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
    return f"<think>{body}</think><answer>{answer}</answer>"


def build_grounding_problem(sample: GroundingSample, image_size: int, box_format: str) -> Problem:
    """Letterbox the sample's image and map its gold box into the observed pixels."""
    from lavida_envs.datasets.common import letterbox

    image, lb = letterbox(sample.image_path, image_size)
    x1, y1, x2, y2 = (min(max(round(v), 0), image_size) for v in lb.box_to_image(sample.box))
    x2, y2 = max(x2, min(x1 + 1, image_size)), max(y2, min(y1 + 1, image_size))
    x1, y1 = min(x1, x2 - 1), min(y1, y2 - 1)
    gold = (x1, y1, x2, y2)
    answer = format_box(gold, box_format, image_size, image_size)
    what = sample.meta.get("category", "object")
    steps = [f'The description "{sample.expression}" matches the {what} in the image.',
             f"Its bounding box is {answer}."]
    return Problem(
        prompt=grounding_prompt(f'the object described as "{sample.expression[:1500]}"', image_size, box_format),
        image=image,
        answer=answer,
        solution=grounding_solution(steps, answer),
        difficulty=sample.difficulty,
        key=f"{sample.dataset}:{sample.sample_id}",
        source=sample.dataset,
        meta={"box": gold, "expression": sample.expression, "original_box": sample.box,
              "image_path": str(sample.image_path), **sample.meta},
    )


def _uses_sides(ref: Any) -> bool:
    return isinstance(ref, SidesCount) or (hasattr(ref, "anchor") and _uses_sides(ref.anchor))


@dataclass(frozen=True)
class GroundingSpec:
    """A drawn problem: the scene, the expression and its proven referent."""

    scene: Scene
    ref: Ref
    target: int

    @property
    def key(self) -> str:
        """The scene graph: a scene belongs to one split whatever is asked about it."""
        return self.scene.key()


class _LazyProblems(Sequence):
    """Dataset problems built (image letterboxed from disk) on first access, LRU-cached."""

    def __init__(self, samples: list[Any], build: Callable[[Any], Problem], cache: int = 256) -> None:
        self._samples, self._build, self._cache, self._size = samples, build, OrderedDict(), cache

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Problem:  # type: ignore[override]
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        problem = self._build(self._samples[index])
        self._cache[index] = problem
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return problem


class GroundingEnv(TaskEnv):
    """Reason-intensive visual grounding on shape scenes (or RefCOCO/ReasonSeg files)."""

    task_name = "grounding"
    env_version = "0"

    def __init__(
        self,
        split: str = "train",
        difficulty: int | str = "mixed",
        image_size: int = 128,
        dataset: str | None = None,
        data_dir: str | None = None,
        reward: dict[str, float] | None = None,
        render_mode: str | None = None,
        box_format: str = "pixel",
        iou_threshold: float | None = None,
        min_shapes: int = 3,
        max_shapes: int = 9,
        iou_floor: float = DEFAULT_IOU_FLOOR,
        grid: int = LEVEL1_GRID,
        expression: str = "any",
    ) -> None:
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {list(BOX_FORMATS)}, got {box_format!r}")
        if iou_threshold is not None and not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be None (continuous IoU) or in (0, 1], got {iou_threshold!r}")
        if isinstance(iou_floor, bool) or not isinstance(iou_floor, (int, float)) or not 0.0 <= iou_floor < 1.0:
            raise ValueError(f"iou_floor must be a number in [0, 1) (0 = continuous IoU), got {iou_floor!r}")
        if not 2 <= int(min_shapes) <= int(max_shapes) <= 12:
            raise ValueError(f"need 2 <= min_shapes <= max_shapes <= 12, got {min_shapes}, {max_shapes}")
        if isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= LEVEL1_GRID:
            raise ValueError(f"grid must be an int in [2, {LEVEL1_GRID}] (level-1 cells per side), got {grid!r}")
        if expression not in EXPRESSIONS:
            raise ValueError(f"expression must be one of {list(EXPRESSIONS)}, got {expression!r}")
        self.grid, self.expression = grid, expression
        self.box_format = box_format
        self.iou_threshold = None if iou_threshold is None else float(iou_threshold)
        self.iou_floor = float(iou_floor)
        self.min_shapes, self.max_shapes = int(min_shapes), int(max_shapes)
        super().__init__(split, difficulty, image_size, dataset, data_dir, reward, render_mode)

    # ----- procedural problems -------------------------------------------------------
    def sample_spec(self, rng: random.Random, difficulty: int) -> GroundingSpec:
        """A scene and a level-``difficulty`` expression proven to name exactly one shape."""
        for _ in range(200):
            if difficulty == 1:
                top = min(self.max_shapes, self.grid**2)
                scene = sample_grid_scene(rng, min(self.min_shapes, top), top, self.grid, LEVEL1_SIZE)
            else:
                scene = sample_scene(rng, self.min_shapes, self.max_shapes)
            if split_of_key(f"{self.task_name}|{scene.key()}") != self.split:
                continue  # cheap early rejection; TaskEnv.problem re-checks the key's split
            found = generate(rng, scene, difficulty, expression=self.expression)
            if found is not None:
                return GroundingSpec(scene, found[0], found[1])
        raise RuntimeError(
            f"no level-{difficulty} {self.split!r} expression found in 200 scenes; widen min/max_shapes"
        )

    def _box_text(self, box: Sequence[float]) -> str:
        return format_box(box, self.box_format, self.image_size, self.image_size)

    def build_problem(self, spec: GroundingSpec, rng: random.Random, difficulty: int) -> Problem:
        """Render the scene; gold = the referent's tight pixel box."""
        s = self.image_size
        scene = spec.scene
        gold = shape_box(scene[spec.target], s)

        def name(i: int) -> str:
            return f"{scene[i].describe()} at {self._box_text(shape_box(scene[i], s))}"

        answer = self._box_text(gold)
        if difficulty == 1:  # grid layout: name the target's cell, then its box
            phrase, target = spec.ref.phrase(), scene[spec.target]
            row, col = int(target.y * self.grid) + 1, int(target.x * self.grid) + 1
            steps = [f"{phrase[:1].upper()}{phrase[1:]} is in row {row}, column {col}."]
        else:
            steps = spec.ref.explain(scene, name) + [f"Its bounding box is {answer}."]
        note = _SIDES_NOTE if _uses_sides(spec.ref) else ""
        return Problem(
            prompt=grounding_prompt(spec.ref.phrase(), s, self.box_format, note),
            image=render_scene(scene, s),
            answer=answer,
            solution=grounding_solution(steps, answer),
            difficulty=difficulty,
            key=spec.key,
            meta={"box": gold, "expression": spec.ref.phrase(), "target": spec.target, "scene": scene,
                  "ref": spec.ref},
        )

    # ----- scoring ---------------------------------------------------------------------
    def score(self, action: Any, problem: Problem) -> Score:
        """accuracy = IoU floored at iou_floor (or 1[IoU >= iou_threshold]) of the one parsed box; format term."""
        text, error = coerce_text(action)
        if text is None:
            return Score({"accuracy": 0.0, "format": 0.0}, False, {"iou": 0.0}, None, error)
        s = self.image_size
        iou, pred, error = score_box_text(text, problem.meta["box"], s, s, self.box_format)
        accuracy = iou_accuracy(iou, self.iou_floor, self.iou_threshold)
        return Score(
            components={"accuracy": accuracy, "format": format_reward(text)},
            correct=iou >= 0.5,
            metrics={"iou": iou},
            parsed=None if pred is None else [float(v) for v in pred],
            error=error,
        )

    # ----- real benchmarks -------------------------------------------------------------
    def load_dataset(self, name: str, data_dir: str | None, split: str) -> Sequence[Problem]:
        """RefCOCO/RefCOCO+/RefCOCOg or ReasonSeg from ``data_dir`` (``name[:subsplit]``)."""
        from lavida_envs.datasets.reasonseg import load_reasonseg
        from lavida_envs.datasets.refcoco import REFCOCO_NAMES, load_refcoco

        base, _, sub = name.partition(":")
        base = base.lower()
        if data_dir is None:
            raise ValueError(f"dataset {name!r} needs data_dir= (the folder holding its files)")
        if base in REFCOCO_NAMES:
            samples = load_refcoco(base, data_dir, split, sub or None)
        elif base == "reasonseg":
            samples = load_reasonseg(data_dir, split, sub or None)
        else:
            raise ValueError(
                f"unknown grounding dataset {name!r}; known: {sorted(REFCOCO_NAMES) + ['reasonseg']} "
                "(optionally with ':SUBSPLIT', e.g. 'refcoco:testA')"
            )
        if self.difficulty != "mixed":
            samples = [x for x in samples if x.difficulty == self.difficulty]

        def build(sample: Any) -> Problem:
            return build_grounding_problem(sample, self.image_size, self.box_format)

        return _LazyProblems(samples, build)
