"""Referring-expression generation by difficulty, with a uniqueness proof.

``generate(rng, scene, level)`` picks a target shape and builds an expression of the
level's templates aimed at it, then *proves* it: the expression is evaluated as a
predicate over the whole scene graph (:mod:`lavida_envs.tasks.grounding_refs`) and kept
only when it matches exactly that one shape. From level 2 on, the head noun ("circle",
"red shape", ...) must match at least two shapes, so the attribute alone never suffices.

Levels: 1 direct attribute ("the red circle"); 2 spatial relation to a directly named
anchor or a spatial extreme; 3 ordinal/comparative by size or position; 4 counting and
arithmetic (sides = a count + offset, colour/kind frequencies); 5 two hops: a relation or
same-colour/kind link to an anchor that is itself a level 2-4 expression.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from lavida_envs.scene import Scene
from lavida_envs.tasks.grounding_refs import (
    Attr,
    AttrCount,
    Desc,
    Extreme,
    PosRank,
    Ref,
    Relation,
    SameAttr,
    SidesCount,
    SizeRank,
    _strictly,
)

__all__ = ["EXPRESSIONS", "LEVELS", "gen_color", "generate", "heads_for"]

Gen = Callable[[random.Random, Scene, int], Optional[Ref]]
_DIRS = ("left", "right", "above", "below")


def heads_for(scene: Scene, t: int, min_matches: int = 2, fix: str | None = None) -> list[Desc]:
    """Descriptions that include shape ``t`` and match at least ``min_matches`` shapes.

    ``fix``: "no-color" / "no-kind" forbid naming that attribute; "kind" requires the kind.
    """
    s = scene[t]
    options = [Desc(), Desc(color=s.color), Desc(kind=s.kind), Desc(s.color, s.kind)]
    if fix == "no-color":
        options = [d for d in options if d.color is None]
    elif fix == "no-kind":
        options = [d for d in options if d.kind is None]
    elif fix == "kind":
        options = [d for d in options if d.kind is not None]
    return [d for d in options if len(d.select(scene)) >= min_matches]


def _first(rng: random.Random, scene: Scene, t: int, cands: list[Ref]) -> Ref | None:
    """A random candidate that provably refers to exactly shape ``t``."""
    rng.shuffle(cands)
    for ref in cands:
        if ref.evaluate(scene) == [t]:
            return ref
    return None


def gen_attr(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """Level 1: 'the red circle' / 'the circle' / 'the red shape'."""
    s = scene[t]
    return _first(rng, scene, t, [Attr(Desc(s.color, s.kind)), Attr(Desc(kind=s.kind)), Attr(Desc(color=s.color))])


def gen_color(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """The CPU testbed's level 1 (``expression="color"``): 'the red shape' only."""
    return _first(rng, scene, t, [Attr(Desc(color=scene[t].color))])


def _relation(anchor_gen: Gen) -> Gen:
    def gen(rng: random.Random, scene: Scene, t: int) -> Ref | None:
        heads = heads_for(scene, t)
        if not heads:
            return None
        others = [a for a in range(len(scene)) if a != t]
        rng.shuffle(others)
        for a in others[:4]:
            rels = [r for r in _DIRS if _strictly(r, scene[t], scene[a])] + ["closest"]
            rel = rng.choice(rels)
            anchor = anchor_gen(rng, scene, a)
            if anchor is None:
                continue
            found = _first(rng, scene, t, [Relation(h, rel, anchor) for h in heads])
            if found is not None:
                return found
        return None

    return gen


def gen_extreme(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """Level 2: 'the leftmost red shape'."""
    return _first(rng, scene, t, [Extreme(h, d) for h in heads_for(scene, t) for d in _DIRS])


def gen_size_rank(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """Level 3: 'the second-largest triangle'."""
    cands: list[Ref] = []
    for h in heads_for(scene, t, fix="kind"):
        idx = h.select(scene)
        for order, sign in (("largest", -1), ("smallest", 1)):
            k = 1 + sum(1 for i in idx if sign * scene[i].size < sign * scene[t].size)
            if k <= 3:
                cands.append(SizeRank(h, order, k))
    return _first(rng, scene, t, cands)


def gen_pos_rank(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """Level 3: 'the second circle from the left'."""
    cands: list[Ref] = []
    for h in heads_for(scene, t, min_matches=3):
        idx = h.select(scene)
        for side in _DIRS:
            coord = (lambda s: s.x) if side in ("left", "right") else (lambda s: s.y)
            sign = 1 if side in ("left", "above") else -1
            k = 1 + sum(1 for i in idx if sign * coord(scene[i]) < sign * coord(scene[t]))
            if 2 <= k <= 4:
                cands.append(PosRank(h, side, k))
    return _first(rng, scene, t, cands)


def gen_sides_count(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """Level 4: 'the shape with one more side than there are green shapes'."""
    sides = scene[t].sides
    if sides == 0:
        return None
    present = {(s.color, None) for s in scene} | {(None, s.kind) for s in scene}
    descs = [Desc(c, k) for c, k in sorted(present, key=str)]
    counts = [(d, len(d.select(scene))) for d in descs]
    cands: list[tuple[tuple[Desc, ...], int]] = []
    for d, c in counts:
        if abs(sides - c) <= 2:
            cands.append(((d,), sides - c))
    colors = [(d, c) for d, c in counts if d.kind is None]
    for i, (d1, c1) in enumerate(colors):
        for d2, c2 in colors[i + 1 :]:
            if c1 + c2 == sides:
                cands.append(((d1, d2), 0))
    if not cands:
        return None
    counted, offset = rng.choice(cands)
    return _first(rng, scene, t, [SidesCount(h, counted, offset) for h in heads_for(scene, t, fix="no-kind")])


def gen_attr_count(rng: random.Random, scene: Scene, t: int) -> Ref | None:
    """Level 4: 'the circle whose color occurs exactly twice in the image'."""
    attr = rng.choice(("color", "kind"))
    value = scene[t].color if attr == "color" else scene[t].kind
    k = sum(1 for s in scene if (s.color if attr == "color" else s.kind) == value)
    if k > 4:
        return None
    fix = "no-color" if attr == "color" else "no-kind"
    return _first(rng, scene, t, [AttrCount(h, attr, k) for h in heads_for(scene, t, fix=fix)])


def _same_attr(anchor_gen: Gen) -> Gen:
    def gen(rng: random.Random, scene: Scene, t: int) -> Ref | None:
        attr = rng.choice(("color", "kind"))
        value = getattr(scene[t], attr)
        anchors = [a for a in range(len(scene)) if a != t and getattr(scene[a], attr) == value]
        if not anchors:
            return None
        anchor = anchor_gen(rng, scene, rng.choice(anchors))
        if anchor is None:
            return None
        fix = "no-color" if attr == "color" else "no-kind"
        return _first(rng, scene, t, [SameAttr(h, attr, anchor) for h in heads_for(scene, t, fix=fix)])

    return gen


def _any_of(*gens: Gen) -> Gen:
    def gen(rng: random.Random, scene: Scene, t: int) -> Ref | None:
        order = list(gens)
        rng.shuffle(order)
        for g in order:
            ref = g(rng, scene, t)
            if ref is not None:
                return ref
        return None

    return gen


_L2 = _any_of(_relation(gen_attr), gen_extreme)
_L3 = _any_of(gen_size_rank, gen_pos_rank)
_L4 = _any_of(gen_sides_count, gen_attr_count)
_L5 = _any_of(_relation(_any_of(_L3, _L4)), _same_attr(_any_of(_L2, _L3, _L4)))
#: The generator of each difficulty level: ``(rng, scene, target) -> Ref | None``.
LEVELS: dict[int, Gen] = {1: gen_attr, 2: _L2, 3: _L3, 4: _L4, 5: _L5}


#: Expression families a level-1 env may be restricted to (``expression=``): every level-1 form, or colour only.
EXPRESSIONS: tuple[str, ...] = ("any", "color")


def generate(
    rng: random.Random, scene: Scene, level: int, tries: int = 6, expression: str = "any"
) -> tuple[Ref, int] | None:
    """An expression of ``level`` proven to refer to exactly one shape, and that shape's index.

    ``expression="color"`` (level 1 only): colour-only expressions, the CPU testbed level (docs/testbed.md).
    """
    gen = gen_color if expression == "color" and level == 1 else LEVELS[level]
    targets = list(range(len(scene)))
    rng.shuffle(targets)
    for t in targets[:tries]:
        ref = gen(rng, scene, t)
        if ref is not None and ref.evaluate(scene) == [t]:
            return ref, t
    return None
