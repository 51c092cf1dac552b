"""``LaViDa/ImageEdit-v0``: reason-intensive image edits on procedural shape scenes.

Each problem shows a scene of 3-9 shapes and an instruction whose target must be found by
reasoning ("Recolor the shape with as many sides as there are green shapes to the color of
the red circle."): ops recolor, remove, move, resize, add (:mod:`lavida_envs.tasks.edit_ops`);
difficulty 1 names the target directly, 2 by a spatial relation or extreme, 3 by an
ordinal/comparative, 4 by counting (and the value by another reference), 5 by two hops.
The target image is the edited scene graph re-rendered exactly; the region that should
change is the union of the edited shape's old and new pixel footprints. Splits are by
source scene (the problem key is the scene graph), so a test scene is never edited in train.

Action: ``{"text": str, "image": uint8[S, S, 3]}`` (the text is ``<think>...</think>
<answer>edit description</answer>``). A bare ``str`` is accepted: its edit part scores 0
with a reason in ``info["error"]``. Images of another size or dtype are coerced
(:func:`lavida_envs.rewards.edit.coerce_image`); unusable ones score 0 with a reason.

Reward = 0.9 * edit + 0.1 * format (weights via ``reward=``), where ``format`` is
:func:`lavida_envs.rewards.format.format_reward` of the text and ``edit`` depends on
``edit_reward``:

* ``"exact"`` (default, deterministic): :func:`~lavida_envs.rewards.edit.edit_fidelity`
  against the exact target and region (formula in that module);
* ``"clip"`` (``clip_path`` = local CLIP directory): ``0.5 * max(0, CLIP-I(output, target))
  + 0.5 * max(0, image-directional(source -> output vs source -> target))``;
* ``"judge"`` (``judge`` = a VLM policy or callable; ``judge_cache_dir``, ``judge_id``):
  sqrt(SC * PQ) / 10 from :class:`~lavida_envs.rewards.edit.JudgeScorer`; the env is then
  marked ``nondeterministic``.

``info["correct"]`` is ``edit >= 0.9``. ``info["metrics"]`` always carries the exact
fidelity parts (and the CLIP or judge numbers when used).

``info["answer"]`` names the concrete edit ("recolor the blue star centred at (54, 78)
to red"); ``info["solution"]`` is only the reference *text* (stepping it alone scores the
format part). ``info["reference_action"]`` is the complete reference action, ``{"text":
solution, "image": exact target image}``, which scores 1.0 -- what an oracle steps and SFT
data supervises. The region mask is a side door for tests:
``env.unwrapped.problem(index).meta["region_mask"]`` (and ``meta["target_image"]``).
Real data: ``dataset="magicbrush", data_dir=...`` (:mod:`lavida_envs.datasets.magicbrush`).

``grid`` (default None: free layout) lays the scene out as Grounding's level 1 does: one shape
size, centred in distinct cells of a ``grid x grid`` layout; ``expression="color"`` (level 1)
names the target by its colour only. The CPU testbed level of docs/testbed.md ("CPU testbed
levels of Grounding and ImageEdit") is level 1 with ``ops=["recolor"], grid=2, min_shapes=2,
max_shapes=2, expression="color"``: "Recolor the red shape to blue." on two shapes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from gymnasium import spaces

from lavida_envs.base import CHARSET, MAX_ACTION_CHARS, Problem, Score, TaskEnv, coerce_text, split_of_key
from lavida_envs.rewards.edit import CLIPScorer, EditReference, JudgeScorer, coerce_image
from lavida_envs.rewards.format import format_reward
from lavida_envs.render import BACKGROUND
from lavida_envs.scene import render_scene, sample_grid_scene, sample_scene
from lavida_envs.tasks.grounding import LEVEL1_GRID, LEVEL1_SIZE
from lavida_envs.tasks.grounding_refgen import EXPRESSIONS
from lavida_envs.tasks.edit_ops import OPS, EditSpec, changes_pixels, edit_prompt, region_mask, sample_edit

__all__ = ["CORRECT_THRESHOLD", "EDIT_REWARDS", "ImageEditEnv"]

EDIT_REWARDS: tuple[str, ...] = ("exact", "clip", "judge")
#: An edit counts as correct when its edit score reaches this.
CORRECT_THRESHOLD = 0.9
#: Scene draws per spec before giving up (the op is fixed first, so ops stay balanced).
_SCENE_DRAWS = 200
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class ImageEditEnv(TaskEnv):
    """Procedural reason-intensive image editing with exact, CLIP or judge rewards."""

    task_name: ClassVar[str] = "image_edit"
    default_reward_weights: ClassVar[dict[str, float]] = {"edit": 0.9, "format": 0.1}

    def __init__(
        self,
        split: str = "train",
        difficulty: int | str = "mixed",
        image_size: int = 128,
        dataset: str | None = None,
        data_dir: str | None = None,
        reward: dict[str, float] | None = None,
        render_mode: str | None = None,
        edit_reward: str = "exact",
        clip_path: str | None = None,
        judge: Any = None,
        judge_id: str = "judge",
        judge_cache_dir: str | None = None,
        ops: Sequence[str] = OPS,
        min_shapes: int = 3,
        max_shapes: int = 9,
        grid: int | None = None,
        expression: str = "any",
    ) -> None:
        if edit_reward not in EDIT_REWARDS:
            raise ValueError(f"edit_reward must be one of {EDIT_REWARDS}, got {edit_reward!r}")
        if edit_reward == "clip" and not clip_path:
            raise ValueError("edit_reward='clip' needs clip_path=<local CLIP model directory>")
        if edit_reward == "judge" and judge is None:
            raise ValueError("edit_reward='judge' needs judge=<VLM policy with act() or a callable obs -> text>")
        bad = [op for op in ops if op not in OPS] if not isinstance(ops, str) else [ops]
        if bad or not ops:
            raise ValueError(f"ops must be a non-empty list drawn from {OPS}, got {ops!r}")
        if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= LEVEL1_GRID):
            raise ValueError(f"grid must be None (free layout) or an int in [2, {LEVEL1_GRID}], got {grid!r}")
        low, high = (2, grid * grid) if grid else (3, 9)
        if not low <= int(min_shapes) <= int(max_shapes) <= high:
            raise ValueError(f"need {low} <= min_shapes <= max_shapes <= {high} (grid={grid}), got {min_shapes}, {max_shapes}")
        if expression not in EXPRESSIONS:
            raise ValueError(f"expression must be one of {list(EXPRESSIONS)}, got {expression!r}")
        self.grid, self.expression = grid, expression
        self.edit_reward = edit_reward
        self.ops = tuple(ops)
        self.min_shapes, self.max_shapes = int(min_shapes), int(max_shapes)
        super().__init__(split, difficulty, image_size, dataset, data_dir, reward, render_mode)
        self.clip = CLIPScorer(clip_path) if edit_reward == "clip" else None
        self.judge = JudgeScorer(judge, judge_id, judge_cache_dir) if edit_reward == "judge" else None
        if self.judge is not None:
            self.nondeterministic = True

    # ----- spaces and data -------------------------------------------------------------
    def make_action_space(self) -> spaces.Space:
        """``Dict(text=Text, image=Box(uint8, (S, S, 3)))``."""
        return spaces.Dict(
            {
                "text": spaces.Text(MAX_ACTION_CHARS, min_length=0, charset=CHARSET),
                "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            }
        )

    def reference_action(self, problem: Problem) -> dict[str, Any]:
        """``{"text": solution, "image": exact target image}`` (a copy): scores full reward."""
        return {"text": problem.solution, "image": np.array(problem.meta["target_image"], dtype=np.uint8, copy=True)}

    def load_dataset(self, name: str, data_dir: str | None, split: str) -> list[Problem]:
        """MagicBrush-style triplets: ``dataset="magicbrush"`` with ``data_dir`` (or the folder as ``dataset``)."""
        from lavida_envs.datasets.magicbrush import load_magicbrush

        if name != "magicbrush" and not Path(name).exists():
            raise ValueError(
                f"image_edit has no loader for dataset={name!r}; use dataset='magicbrush' with data_dir=<folder>"
            )
        folder = data_dir if name == "magicbrush" else name
        if folder is None:
            raise ValueError("dataset='magicbrush' needs data_dir=<folder with edit_sessions.json>")
        problems = load_magicbrush(folder, split, self.image_size)
        if self.difficulty != "mixed":
            problems = [p for p in problems if p.difficulty == self.difficulty]
        return problems

    # ----- generation -------------------------------------------------------------------
    def sample_spec(self, rng: random.Random, difficulty: int) -> EditSpec:
        """Pick an op, then draw scenes until an edit of that op and level is proven."""
        op = rng.choice(self.ops)
        for _ in range(_SCENE_DRAWS):
            if self.grid:
                scene = sample_grid_scene(rng, self.min_shapes, self.max_shapes, self.grid, LEVEL1_SIZE)
            else:
                scene = sample_scene(rng, self.min_shapes, self.max_shapes)
            if split_of_key(f"{self.task_name}|{scene.key()}") != self.split:
                continue  # cheap early rejection; TaskEnv.spec_for re-checks the key's split
            spec = sample_edit(rng, scene, difficulty, ops=(op,), expression=self.expression)
            if spec is not None and changes_pixels(spec, self.image_size):
                return spec
        raise RuntimeError(
            f"image_edit: no {op!r} edit at difficulty {difficulty} in {_SCENE_DRAWS} scenes "
            f"(image_size={self.image_size}, shapes {self.min_shapes}-{self.max_shapes})"
        )

    def build_problem(self, spec: EditSpec, rng: random.Random, difficulty: int) -> Problem:
        """Render source and target; the region is the edited shape's old + new footprint."""
        size = self.image_size
        return Problem(
            prompt=edit_prompt(spec.instruction),
            image=render_scene(spec.scene, size),
            answer=spec.answer(size),
            solution=spec.solution(size),
            difficulty=difficulty,
            key=spec.key,
            meta={
                "target_image": render_scene(spec.edited, size),
                "region_mask": region_mask(spec, size),
                "instruction": spec.instruction,
                "op": spec.op,
                "target_index": spec.target,
                "scene": spec.scene,
                "edited_scene": spec.edited,
            },
        )

    # ----- scoring ----------------------------------------------------------------------
    @staticmethod
    def split_action(action: Any) -> tuple[str | None, Any, list[str]]:
        """``(text or None, image or None, errors)`` from a dict or bare-str action."""
        if isinstance(action, (str, bytes, bytearray)):
            text, err = coerce_text(action)
            errors = ["bare text action has no image: the edit part scores 0"]
            return text, None, errors + ([err] if err else [])
        if not isinstance(action, Mapping):
            kind = type(action).__name__
            return None, None, [f"action must be {{'text': str, 'image': uint8[H, W, 3]}} or a str, got {kind}"]
        text, err = coerce_text({"text": action.get("text", "")})
        image = action.get("image")
        errors = [f"text: {err}"] if err else []
        if image is None:
            errors.append("action has no 'image': the edit part scores 0")
        return text, image, errors

    def score(self, action: Any, problem: Problem) -> Score:
        """Edit score (exact / CLIP / judge) of the image plus the format of the text."""
        text, image, errors = self.split_action(action)
        components = {"edit": 0.0, "format": format_reward(text) if text is not None else 0.0}
        answers = _ANSWER.findall(text) if text is not None else []
        parsed: dict[str, Any] = {"answer": answers[-1].strip()[:500] if answers else None, "image_shape": None}
        metrics: dict[str, float] = {}
        if image is not None:
            output, err, notes = coerce_image(image, (self.image_size, self.image_size))
            if output is None:
                errors.append(f"image: {err}")
            else:
                parsed["image_shape"] = list(np.shape(image))
                if notes:
                    parsed["image_notes"] = notes
                components["edit"] = self._edit_score(output, problem, metrics, errors)
        return Score(
            components=components,
            correct=components["edit"] >= CORRECT_THRESHOLD,
            metrics=metrics,
            parsed=parsed,
            error="; ".join(errors) if errors else None,
        )

    def _edit_score(self, output: np.ndarray, problem: Problem, metrics: dict[str, float], errors: list[str]) -> float:
        source, target = problem.image, problem.meta["target_image"]
        reference = problem.meta.get("_edit_reference")
        if reference is None:  # prepared once per problem: a GRPO group scores it many times
            known = BACKGROUND if problem.source == "procedural" else None  # real photos: most common colour
            reference = EditReference.build(source, target, problem.meta["region_mask"], background=known)
            problem.meta["_edit_reference"] = reference
        exact = reference.score(output)
        metrics.update(exact.as_metrics())
        if self.clip is not None:
            clip = self.clip.scores(output, source, target, problem.meta["instruction"])
            metrics.update(clip)
            score = 0.5 * max(0.0, clip["clip_i"]) + 0.5 * max(0.0, clip["image_directional"])
            return float(min(1.0, round(score, 6)))
        if self.judge is not None:
            verdict = self.judge.score(output, problem.meta["instruction"], source)
            metrics.update({k: v for k, v in (("judge_sc", verdict.sc), ("judge_pq", verdict.pq)) if v is not None})
            if verdict.error:
                errors.append(f"judge: {verdict.error}")
            return float(verdict.score)
        return exact.score
