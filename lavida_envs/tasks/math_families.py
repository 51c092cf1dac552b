"""The VisualMath family registry and the per-level mixture (data, not code paths).

``FAMILIES`` maps a family name to its :class:`~lavida_envs.tasks.math_spec.Family`;
``LEVEL_MIX`` gives the weighted families of each difficulty level and ``MC_PROB`` the
chance that a problem of a multiple-choice-capable family is asked as options A-D.
``draw_draft(rng, level)`` draws one problem's content from that mixture (cheap: what the
split redraws need); ``build_spec(draft, rng, level)`` turns it into the full spec.
"""

from __future__ import annotations

import random
from dataclasses import replace

from lavida_envs.tasks.math_arith import ARITH, FRACTION
from lavida_envs.tasks.math_charts import CHART
from lavida_envs.tasks.math_geometry import ANGLES, CIRCLE, RIGHT
from lavida_envs.tasks.math_spec import LETTERS, Draft, Family, MathSpec

__all__ = ["FAMILIES", "LEVEL_MIX", "MC_PROB", "build_spec", "draw_draft", "draw_spec", "make_multiple_choice"]

#: Every family by name.
FAMILIES: dict[str, Family] = {f.name: f for f in (ARITH, FRACTION, ANGLES, RIGHT, CIRCLE, CHART)}

#: level -> ((family, weight), ...)
LEVEL_MIX: dict[int, tuple[tuple[str, float], ...]] = {
    1: (("arith", 1.0),),
    2: (("arith", 1.0),),
    3: (("arith", 3.0), ("fraction", 2.0), ("angles", 2.0), ("circle", 2.0), ("chart", 2.0)),
    4: (("arith", 2.0), ("fraction", 2.0), ("angles", 2.0), ("right", 2.0), ("circle", 2.0), ("chart", 2.0)),
    5: (("arith", 2.0), ("fraction", 2.0), ("angles", 1.0), ("right", 2.0), ("circle", 2.0), ("chart", 2.0)),
}

#: level -> probability that a multiple-choice-capable family is asked with options A-D.
MC_PROB: dict[int, float] = {1: 0.0, 2: 0.0, 3: 0.25, 4: 0.35, 5: 0.5}


def make_multiple_choice(spec: MathSpec, rng: random.Random) -> MathSpec:
    """The same problem asked with options A-D (gold and three distractors, shuffled)."""
    options = [spec.answer, *spec.distractors[:3]]
    if len(set(options)) != len(LETTERS):
        raise AssertionError(f"{spec.family} gave duplicate options {options!r}")
    rng.shuffle(options)
    return replace(spec, choices=tuple(options), gold_index=options.index(spec.answer))


def draw_draft(rng: random.Random, level: int, family: str | None = None) -> Draft:
    """One problem's content at ``level``: a family from the mixture (or ``family``), maybe MC."""
    if family is None:
        names, weights = zip(*LEVEL_MIX[level])
        family = rng.choices(names, weights)[0]
    fam = FAMILIES[family]
    content = fam.draw(rng, level)
    return Draft(family, content, fam.multiple_choice and rng.random() < MC_PROB[level])


def build_spec(draft: Draft, rng: random.Random, level: int) -> MathSpec:
    """The full spec of ``draft`` (``rng`` continues: distractor and option order)."""
    spec = FAMILIES[draft.family].build(draft.content, rng, level)
    return make_multiple_choice(spec, rng) if draft.multiple_choice else spec


def draw_spec(rng: random.Random, level: int, family: str | None = None) -> MathSpec:
    """:func:`draw_draft` then :func:`build_spec` with the same ``rng``."""
    return build_spec(draw_draft(rng, level, family), rng, level)
