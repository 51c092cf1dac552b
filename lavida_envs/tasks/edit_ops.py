"""Reason-intensive edit instructions on shape scenes: ops, their values, the edited scene graph.

An :class:`EditSpec` is a source :class:`~lavida_envs.scene.Scene`, one op applied to the
shape a referring expression proves to be unique (the grounding task's generator,
:mod:`lavida_envs.tasks.grounding_refgen`, aimed at the same difficulty levels), and the
edited scene. The target image is ``render_scene(spec.edited, S)``; the region that
changes is the union of the old and new pixel footprints of the edited shape.

Ops (sizes/positions are fractions of the image side; ``pct`` = percent of the side):

* ``recolor``  -- "Recolor REF to red" / "... to the color of REF2": same shape, new colour.
* ``remove``   -- "Remove REF".
* ``move``     -- "Move REF to the right by 20% of the image width": centre shifted.
* ``resize``   -- "Scale REF by a factor of 1.5 about its centre" / "Resize REF to the size
  of REF2" (REF2 of the same kind; size = half-extent, as in the scene graph).
* ``add``      -- "Add a copy of REF 25% of the image height below it" (from level 4 "...
  in the color of REF2"): kind, colour and size copied, centre shifted.

Values are explicit at levels 1-3 and themselves referred to from level 4 (REF2 a level-1
expression at level 4, level 2-3 at level 5). Every edited shape must stay inside the
image margins and clear of all other shapes (``scene.can_place``), and the edit must
change at least one pixel at the env's image size; otherwise the generator draws again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from lavida_envs.scene import COLORS, MARGIN, Scene, Shape, can_place, moved, shape_mask
from lavida_envs.tasks.grounding_refgen import LEVELS, generate
from lavida_envs.tasks.grounding_refs import Ref

__all__ = [
    "EDIT_PROMPT",
    "OPS",
    "EditSpec",
    "edit_prompt",
    "changes_pixels",
    "edit_solution",
    "region_mask",
    "sample_edit",
    "shape_name",
]

OPS: tuple[str, ...] = ("recolor", "remove", "move", "resize", "add")
EDIT_PROMPT = (
    "Edit the image as instructed: {instruction}\n"
    "Think step by step inside <think></think> and name the shape you change, give a short "
    "description of the edit inside <answer></answer>, and return the edited image."
)
_SHIFTS = (10, 15, 20, 25, 30, 40)  # percent of the image side
_FACTORS = (0.5, 0.75, 1.5, 2.0)
_MIN_SIZE = 0.03
_DIRS = {"left": (-1, 0, "width"), "right": (1, 0, "width"), "up": (0, -1, "height"), "down": (0, 1, "height")}
_ADD_WHERE = {"left": "to the left of", "right": "to the right of", "up": "above", "down": "below"}


def edit_prompt(instruction: str) -> str:
    """The observation prompt for an edit instruction."""
    return EDIT_PROMPT.format(instruction=instruction)


def edit_solution(steps: Sequence[str], answer: str) -> str:
    """Reference solution ``<think>steps</think><answer>answer</answer>``."""
    return f"<think>{' '.join(steps)}</think><answer>{answer}</answer>"


def shape_name(shape: Shape, image_size: int) -> str:
    """'blue star centred at (54, 78)' (pixel coordinates of the centre)."""
    return f"{shape.describe()} centred at ({round(shape.x * image_size)}, {round(shape.y * image_size)})"


@dataclass(frozen=True)
class EditSpec:
    """One drawn edit: source scene, op on shape ``target`` (found by ``ref``), the edited scene."""

    scene: Scene
    op: str
    ref: Ref
    target: int
    edited: Scene
    instruction: str
    value: str  # the concrete value in words: "red", "1.5", "to the right by 20% of the image width"
    value_ref: Ref | None = None
    value_index: int | None = None
    where: str = ""  # add: where the copy goes ("25% of the image height below it")

    @property
    def key(self) -> str:
        """The source scene graph: a scene belongs to one split whatever edit is asked of it."""
        return self.scene.key()

    @property
    def old_shape(self) -> Shape | None:
        """The shape the edit removes or changes (None for add)."""
        return None if self.op == "add" else self.scene[self.target]

    @property
    def new_shape(self) -> Shape | None:
        """The shape the edit creates or changes into (None for remove)."""
        if self.op == "remove":
            return None
        return self.edited[len(self.edited) - 1] if self.op == "add" else self.edited[self.target]

    def answer(self, image_size: int) -> str:
        """The edit in plain words naming the concrete shape: 'recolor the blue star centred at (54, 78) to red'."""
        name = shape_name(self.scene[self.target], image_size)
        if self.op == "recolor":
            return f"recolor the {name} to {self.value}"
        if self.op == "remove":
            return f"remove the {name}"
        if self.op == "move":
            return f"move the {name} {self.value}"
        if self.op == "resize":
            return f"resize the {name} by a factor of {self.value}"
        return f"add a {self.value} copy of the {name} {self.where}"

    def solution(self, image_size: int) -> str:
        """Reasoning steps (find the target, find the value, apply) then the answer."""

        def name(i: int) -> str:
            return shape_name(self.scene[i], image_size)

        steps = self.ref.explain(self.scene, name)
        if self.value_ref is not None and self.value_index is not None:
            steps += self.value_ref.explain(self.scene, name)
        old, new = self.old_shape, self.new_shape
        if self.op == "recolor" and old is not None and new is not None:
            steps.append(f"Recolor it from {old.color} to {new.color}.")
        elif self.op == "remove":
            steps.append("Remove it and fill its area with the background.")
        elif self.op == "move" and new is not None:
            steps.append(f"Move it {self.value}: its centre goes to ({round(new.x * image_size)}, "
                         f"{round(new.y * image_size)}).")
        elif self.op == "resize" and old is not None and new is not None:
            steps.append(f"Scale it by {self.value} about its centre: half-extent {old.size:.3f} -> "
                         f"{new.size:.3f} of the image side.")
        elif new is not None:
            steps.append(f"Draw a {new.describe()} of the same size centred at ({round(new.x * image_size)}, "
                         f"{round(new.y * image_size)}).")
        return edit_solution(steps, self.answer(image_size))


def region_mask(spec: EditSpec, image_size: int) -> np.ndarray:
    """Bool (S, S): union of the old and new pixel footprints of the edited shape."""
    out = np.zeros((image_size, image_size), dtype=bool)
    for shape in (spec.old_shape, spec.new_shape):
        if shape is not None:
            out |= shape_mask(shape, image_size)
    return out


def _others(scene: Scene, skip: int) -> list[Shape]:
    return [s for i, s in enumerate(scene.shapes) if i != skip]


def _value_ref(rng: random.Random, scene: Scene, level: int, candidates: list[int]) -> tuple[Ref, int] | None:
    """A proven reference to one of ``candidates`` at the value level of ``level``."""
    value_level = 1 if level == 4 else rng.choice((2, 3))
    rng.shuffle(candidates)
    for u in candidates[:4]:
        ref = LEVELS[value_level](rng, scene, u)
        if ref is not None and ref.evaluate(scene) == [u]:
            return ref, u
    return None


def _shifted(shape: Shape, direction: str, pct: int) -> Shape | None:
    dx, dy, _ = _DIRS[direction]
    x, y = shape.x + dx * pct / 100, shape.y + dy * pct / 100
    if not (MARGIN <= x <= 1 - MARGIN and MARGIN <= y <= 1 - MARGIN):
        return None
    return moved(shape, x, y)


def _op_recolor(rng, scene, t, phrase, level, colors):
    s = scene[t]
    if level >= 4:
        found = _value_ref(rng, scene, level, [u for u in range(len(scene)) if scene[u].color != s.color])
        if found is not None:
            vref, u = found
            color = scene[u].color
            text = f"Recolor {phrase} to the color of {vref.phrase()}."
            return dict(edited=scene.replace(t, replace(s, color=color)), instruction=text, value=color,
                        value_ref=vref, value_index=u)
    color = rng.choice([c for c in colors if c != s.color])
    return dict(edited=scene.replace(t, replace(s, color=color)), instruction=f"Recolor {phrase} to {color}.",
                value=color)


def _op_remove(rng, scene, t, phrase, level, colors):
    return dict(edited=scene.without(t), instruction=f"Remove {phrase}.", value="")


def _shifts(rng: random.Random) -> list[tuple[str, int]]:
    """Every (direction, percent) pair in random order."""
    options = [(d, p) for d in _DIRS for p in _SHIFTS]
    rng.shuffle(options)
    return options


def _op_move(rng, scene, t, phrase, level, colors):
    others = _others(scene, t)
    for direction, pct in _shifts(rng):
        new = _shifted(scene[t], direction, pct)
        if new is not None and can_place(others, new):
            break
    else:
        return None
    axis = _DIRS[direction][2]
    words = f"to the {direction}" if direction in ("left", "right") else direction
    value = f"{words} by {pct}% of the image {axis}"
    return dict(edited=scene.replace(t, new), instruction=f"Move {phrase} {value}.", value=value)


def _op_resize(rng, scene, t, phrase, level, colors):
    s = scene[t]
    if level >= 4:
        same_kind = [u for u in range(len(scene)) if scene[u].kind == s.kind and scene[u].size != s.size]
        found = _value_ref(rng, scene, level, same_kind) if same_kind else None
        if found is not None:
            vref, u = found
            new = replace(s, size=scene[u].size)
            if can_place(_others(scene, t), new):
                factor = f"{new.size / s.size:.3g}"
                return dict(edited=scene.replace(t, new), instruction=f"Resize {phrase} to the size of {vref.phrase()}.",
                            value=factor, value_ref=vref, value_index=u)
    factors = list(_FACTORS)
    rng.shuffle(factors)
    others = _others(scene, t)
    for factor in factors:
        new = replace(s, size=round(s.size * factor, 3))
        if new.size >= _MIN_SIZE and can_place(others, new):
            break
    else:
        return None
    text = f"Scale {phrase} by a factor of {factor:g} about its centre."
    return dict(edited=scene.replace(t, new), instruction=text, value=f"{factor:g}")


def _op_add(rng, scene, t, phrase, level, colors):
    s = scene[t]
    for direction, pct in _shifts(rng):
        copy = _shifted(s, direction, pct)
        if copy is not None and can_place(scene.shapes, copy):
            break
    else:
        return None
    axis = _DIRS[direction][2]
    where = f"{pct}% of the image {axis} {_ADD_WHERE[direction]} it"
    text, value, vref, u = f"Add a copy of {phrase} {where}.", s.color, None, None
    if level >= 4:
        found = _value_ref(rng, scene, level, [v for v in range(len(scene)) if scene[v].color != s.color])
        if found is not None:
            vref, u = found
            copy = replace(copy, color=scene[u].color)
            text, value = f"Add a copy of {phrase} in the color of {vref.phrase()}, {where}.", scene[u].color
    return dict(edited=scene.with_shape(copy), instruction=text, value=value, value_ref=vref, value_index=u,
                where=where)


_OP_FUNCS = {"recolor": _op_recolor, "remove": _op_remove, "move": _op_move, "resize": _op_resize, "add": _op_add}


def sample_edit(
    rng: random.Random, scene: Scene, level: int, ops: Sequence[str] = OPS, colors: Sequence[str] | None = None,
    expression: str = "any",
) -> EditSpec | None:
    """An edit of difficulty ``level`` on ``scene`` whose target is proven unique (``expression``: see generate)."""
    found = generate(rng, scene, level, expression=expression)
    if found is None:
        return None
    ref, t = found
    op = rng.choice(tuple(ops))
    made = _OP_FUNCS[op](rng, scene, t, ref.phrase(), level, tuple(colors or COLORS))
    return None if made is None else EditSpec(scene=scene, op=op, ref=ref, target=t, **made)


def changes_pixels(spec: EditSpec, image_size: int) -> bool:
    """Whether the edit changes at least one pixel at ``image_size``."""
    old, new = spec.old_shape, spec.new_shape
    if old is None or new is None:
        return bool(region_mask(spec, image_size).any())
    if spec.op == "recolor":
        return bool(shape_mask(old, image_size).any())
    return not np.array_equal(shape_mask(old, image_size), shape_mask(new, image_size))
