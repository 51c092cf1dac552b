"""Referring expressions over a shape :class:`~lavida_envs.scene.Scene`: text, predicate, reasoning.

Every expression is a small tree of frozen dataclasses. ``evaluate(scene)`` runs it as a
predicate over the scene graph and returns the indices of every matching shape; an
expression *refers* to a shape only when exactly one shape matches (the generator's
uniqueness proof). ``phrase()`` is its English text ("the second-largest triangle") and
``explain(scene, name)`` the named reasoning steps of the reference solution.

Semantics (normalized coordinates, ``y`` down; ``size`` = half-extent):

* ``Desc(color, kind)`` -- every shape with that colour and/or kind ("red circle",
  "triangle", "red shape", "shape").
* ``Relation(head, rel, anchor)`` -- heads (other than the anchor) entirely on one side of
  the anchor's bounding square ("to the left of", "to the right of", "above", "below");
  the relation only holds when, in addition, no other head has its centre on that side,
  so a looser reading of the words picks the same shape. ``"closest to"`` needs the
  winner to be nearest by both centre distance and gap, by at least ``POS_MARGIN``.
* ``Extreme(head, side)`` -- the leftmost/rightmost/topmost/bottommost head: first by
  centre (ahead of the runner-up by ``POS_MARGIN``) and by near edge (by ``EDGE_MARGIN``).
* ``SizeRank(head, order, k)`` -- the k-th largest/smallest head (heads of one kind only),
  its size strictly different from the sizes ranked just before and after it.
* ``PosRank(head, side, k)`` -- the k-th head counted from one side, the same shape by
  centres (``POS_MARGIN`` from its neighbours in that order) and by near edges (``EDGE_MARGIN``).
* ``SidesCount(head, counted, offset)`` -- heads whose number of sides equals
  ``sum(len(counted[j])) + offset`` (circle 0, triangle 3, square 4, pentagon 5, hexagon 6,
  star 10).
* ``AttrCount(head, attr, k)`` -- heads whose colour (or kind) occurs on exactly ``k``
  shapes of the whole scene.
* ``SameAttr(head, attr, anchor)`` -- heads other than the anchor sharing its colour/kind.

Anchors are expressions themselves; an anchor that does not refer to exactly one shape
makes the enclosing expression match nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

from lavida_envs.scene import SIDES, Scene, Shape

__all__ = [
    "Attr",
    "AttrCount",
    "Desc",
    "Extreme",
    "POS_MARGIN",
    "PosRank",
    "Ref",
    "Relation",
    "SameAttr",
    "SidesCount",
    "SizeRank",
    "refers_to",
]

#: Minimum positional lead (fraction of the image side) for extremes, ordinals, closeness.
POS_MARGIN = 0.04
#: Minimum lead of the near edges for extremes and ordinals (they must agree with centres).
EDGE_MARGIN = 0.02
Namer = Callable[[int], str]
_ORD = {1: "", 2: "second-", 3: "third-"}
_ORDW = {1: "first", 2: "second", 3: "third", 4: "fourth"}
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "pentagon": "pentagons",
           "hexagon": "hexagons", "star": "stars", None: "shapes"}


@dataclass(frozen=True)
class Desc:
    """A set of shapes by colour and/or kind (None = any)."""

    color: str | None = None
    kind: str | None = None

    def noun(self) -> str:
        """'red circle', 'circle', 'red shape' or 'shape'."""
        return " ".join(w for w in (self.color, self.kind or "shape") if w)

    def plural(self) -> str:
        """'red circles', 'circles', 'red shapes' or 'shapes'."""
        return " ".join(w for w in (self.color, _PLURAL[self.kind]) if w)

    def matches(self, s: Shape) -> bool:
        """Whether shape ``s`` is in this set."""
        return (self.color is None or s.color == self.color) and (self.kind is None or s.kind == self.kind)

    def select(self, scene: Scene) -> list[int]:
        """Indices of the matching shapes."""
        return [i for i, s in enumerate(scene.shapes) if self.matches(s)]


def _listing(scene: Scene, idx: list[int], name: Namer) -> str:
    return "; ".join(name(i) for i in idx) if idx else "none"


@dataclass(frozen=True)
class Attr:
    """'the red circle': the head set itself (it must have one member)."""

    head: Desc

    def phrase(self) -> str:
        return f"the {self.head.noun()}"

    def evaluate(self, scene: Scene) -> list[int]:
        return self.head.select(scene)

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        idx = self.evaluate(scene)
        return [f"Find {self.phrase()}: the only {self.head.noun()} is the {name(idx[0])}."]


_SIDE_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below",
               "closest": "closest to"}


def _strictly(rel: str, s: Shape, a: Shape) -> bool:
    if rel == "left":
        return s.x + s.size <= a.x - a.size
    if rel == "right":
        return s.x - s.size >= a.x + a.size
    if rel == "above":
        return s.y + s.size <= a.y - a.size
    return s.y - s.size >= a.y + a.size  # below


def _loosely(rel: str, s: Shape, a: Shape) -> bool:
    return {"left": s.x < a.x, "right": s.x > a.x, "above": s.y < a.y, "below": s.y > a.y}[rel]


def _gap(s: Shape, a: Shape) -> float:
    dx = max(0.0, abs(s.x - a.x) - s.size - a.size)
    dy = max(0.0, abs(s.y - a.y) - s.size - a.size)
    return math.hypot(dx, dy)


def _unique_min(values: list[tuple[float, int]], margin: float = POS_MARGIN) -> int | None:
    """Index with the smallest value, if it leads the runner-up by ``margin``."""
    if not values:
        return None
    values = sorted(values)
    if len(values) > 1 and values[1][0] - values[0][0] < margin:
        return None
    return values[0][1]


@dataclass(frozen=True)
class Relation:
    """'the circle to the left of the blue square' / 'the star closest to ...'."""

    head: Desc
    rel: str
    anchor: "Ref"

    def phrase(self) -> str:
        return f"the {self.head.noun()} {_SIDE_WORDS[self.rel]} {self.anchor.phrase()}"

    def evaluate(self, scene: Scene) -> list[int]:
        anchor = refers_to(self.anchor, scene)
        if anchor is None:
            return []
        a = scene.shapes[anchor]
        cands = [i for i in self.head.select(scene) if i != anchor]
        if self.rel == "closest":
            by_centre = _unique_min([(math.hypot(scene[i].x - a.x, scene[i].y - a.y), i) for i in cands])
            by_gap = _unique_min([(_gap(scene[i], a), i) for i in cands])
            return [by_centre] if by_centre is not None and by_centre == by_gap else []
        strict = [i for i in cands if _strictly(self.rel, scene[i], a)]
        loose = [i for i in cands if _loosely(self.rel, scene[i], a)]
        return strict if strict == loose else []

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        anchor = refers_to(self.anchor, scene)
        steps = self.anchor.explain(scene, name)
        cands = [i for i in self.head.select(scene) if i != anchor]
        t = self.evaluate(scene)[0]
        how = "is nearest to it" if self.rel == "closest" else f"lies {_SIDE_WORDS[self.rel]} it"
        steps.append(
            f"The {self.head.plural()} other than that shape: {_listing(scene, cands, name)}. "
            f"Only the {name(t)} {how}."
        )
        return steps


#: side -> (word, centre key, near-edge key); smaller key = closer to that side.
_EXTREME: dict[str, tuple[str, Callable[[Shape], float], Callable[[Shape], float]]] = {
    "left": ("leftmost", lambda s: s.x, lambda s: s.x - s.size),
    "right": ("rightmost", lambda s: -s.x, lambda s: -(s.x + s.size)),
    "above": ("topmost", lambda s: s.y, lambda s: s.y - s.size),
    "below": ("bottommost", lambda s: -s.y, lambda s: -(s.y + s.size)),
}
_FROM = {"left": "from the left", "right": "from the right", "above": "from the top", "below": "from the bottom"}


@dataclass(frozen=True)
class Extreme:
    """'the leftmost red shape'."""

    head: Desc
    side: str

    def phrase(self) -> str:
        return f"the {_EXTREME[self.side][0]} {self.head.noun()}"

    def evaluate(self, scene: Scene) -> list[int]:
        return PosRank(self.head, self.side, 1).evaluate(scene)  # the first from that side

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        cands = self.head.select(scene)
        t = self.evaluate(scene)[0]
        return [f"The {self.head.plural()}: {_listing(scene, cands, name)}.",
                f"The {_EXTREME[self.side][0]} of them is the {name(t)}."]


def _ranked(scene: Scene, idx: list[int], key: Callable[[Shape], float], k: int, margin: float) -> int | None:
    """The k-th (1-based) index by ascending key, separated from its neighbours by > margin."""
    order = sorted(idx, key=lambda i: key(scene[i]))
    if not 1 <= k <= len(order):
        return None
    v = key(scene[order[k - 1]])
    if k > 1 and v - key(scene[order[k - 2]]) <= margin:
        return None
    if k < len(order) and key(scene[order[k]]) - v <= margin:
        return None
    return order[k - 1]


@dataclass(frozen=True)
class SizeRank:
    """'the second-largest triangle' (heads of one kind)."""

    head: Desc
    order: str  # "largest" | "smallest"
    k: int

    def phrase(self) -> str:
        return f"the {_ORD[self.k]}{self.order} {self.head.noun()}"

    def _key(self) -> Callable[[Shape], float]:
        return (lambda s: -s.size) if self.order == "largest" else (lambda s: s.size)

    def evaluate(self, scene: Scene) -> list[int]:
        if self.head.kind is None:
            return []  # sizes are only comparable within one kind
        t = _ranked(scene, self.head.select(scene), self._key(), self.k, 1e-9)
        return [] if t is None else [t]

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        order = sorted(self.head.select(scene), key=lambda i: self._key()(scene[i]))
        t = self.evaluate(scene)[0]
        return [f"The {self.head.plural()} from {self.order} on: {_listing(scene, order, name)}.",
                f"Number {self.k} in that order is the {name(t)}."]


@dataclass(frozen=True)
class PosRank:
    """'the second circle from the left'."""

    head: Desc
    side: str
    k: int

    def phrase(self) -> str:
        return f"the {_ORDW[self.k]} {self.head.noun()} {_FROM[self.side]}"

    def evaluate(self, scene: Scene) -> list[int]:
        _, centre, edge = _EXTREME[self.side]
        idx = self.head.select(scene)
        t = _ranked(scene, idx, centre, self.k, POS_MARGIN)
        return [t] if t is not None and t == _ranked(scene, idx, edge, self.k, EDGE_MARGIN) else []

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        order = sorted(self.head.select(scene), key=lambda i: _EXTREME[self.side][1](scene[i]))
        t = self.evaluate(scene)[0]
        return [f"The {self.head.plural()} ordered {_FROM[self.side]}: {_listing(scene, order, name)}.",
                f"Number {self.k} is the {name(t)}."]


def _count_words(counted: tuple[Desc, ...], offset: int) -> str:
    if len(counted) == 1:
        base = f"there are {counted[0].plural()}"
    else:
        base = "the number of " + " plus the number of ".join(d.plural() for d in counted)
    if offset == 0:
        return f"as many sides as {base}"
    more = "more" if offset > 0 else "fewer"
    n = abs(offset)
    return f"{n} {more} side{'s' if n > 1 else ''} than {base}"


@dataclass(frozen=True)
class SidesCount:
    """'the shape with as many sides as there are green shapes' (arithmetic on counts)."""

    head: Desc
    counted: tuple[Desc, ...]
    offset: int = 0

    def phrase(self) -> str:
        return f"the {self.head.noun()} with {_count_words(self.counted, self.offset)}"

    def wanted(self, scene: Scene) -> int:
        """The number of sides the counts call for."""
        return sum(len(d.select(scene)) for d in self.counted) + self.offset

    def evaluate(self, scene: Scene) -> list[int]:
        n = self.wanted(scene)
        return [i for i in self.head.select(scene) if scene[i].sides == n]

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        counts = [f"{len(d.select(scene))} {d.plural()}" for d in self.counted]
        n = self.wanted(scene)
        arith = " + ".join(str(len(d.select(scene))) for d in self.counted)
        if self.offset:
            arith += f" {'+' if self.offset > 0 else '-'} {abs(self.offset)}"
        t = self.evaluate(scene)[0]
        return [f"Count: {', '.join(counts)}.", f"Sides wanted: {arith} = {n}.",
                f"Sides: circle 0, triangle 3, square 4, pentagon 5, hexagon 6, star 10; among the "
                f"{self.head.plural()} only the {name(t)} has {n}."]


def _attr(s: Shape, attr: str) -> str:
    return s.color if attr == "color" else s.kind


@dataclass(frozen=True)
class AttrCount:
    """'the circle whose color appears on exactly 2 shapes'."""

    head: Desc
    attr: str  # "color" | "kind"
    k: int

    def phrase(self) -> str:
        what = "whose color" if self.attr == "color" else "whose kind of shape"
        times = "once" if self.k == 1 else "twice" if self.k == 2 else f"{self.k} times"
        return f"the {self.head.noun()} {what} occurs exactly {times} in the image"

    def evaluate(self, scene: Scene) -> list[int]:
        values = [_attr(s, self.attr) for s in scene.shapes]
        return [i for i in self.head.select(scene) if values.count(values[i]) == self.k]

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        values = [_attr(s, self.attr) for s in scene.shapes]
        counts = ", ".join(f"{v} {values.count(v)}" for v in sorted(set(values)))
        t = self.evaluate(scene)[0]
        return [f"Count each {'color' if self.attr == 'color' else 'kind'}: {counts}.",
                f"Among the {self.head.plural()} only the {name(t)} has a {self.attr} that occurs {self.k} "
                f"time{'s' if self.k > 1 else ''}."]


@dataclass(frozen=True)
class SameAttr:
    """'the triangle with the same color as the largest square'."""

    head: Desc
    attr: str  # "color" | "kind"
    anchor: "Ref"

    def phrase(self) -> str:
        what = "color" if self.attr == "color" else "kind"
        return f"the {self.head.noun()} of the same {what} as {self.anchor.phrase()}"

    def evaluate(self, scene: Scene) -> list[int]:
        anchor = refers_to(self.anchor, scene)
        if anchor is None:
            return []
        v = _attr(scene[anchor], self.attr)
        return [i for i in self.head.select(scene) if i != anchor and _attr(scene[i], self.attr) == v]

    def explain(self, scene: Scene, name: Namer) -> list[str]:
        anchor = refers_to(self.anchor, scene)
        steps = self.anchor.explain(scene, name)
        v = _attr(scene[anchor], self.attr)
        t = self.evaluate(scene)[0]
        steps.append(f"Its {self.attr} is {v}; the other {self.head.plural()} with {self.attr} {v}: "
                     f"only the {name(t)}.")
        return steps


Ref = Union[Attr, Relation, Extreme, SizeRank, PosRank, SidesCount, AttrCount, SameAttr]


def refers_to(ref: Ref, scene: Scene) -> int | None:
    """The index of the single shape ``ref`` matches in ``scene``, or None (none or several)."""
    idx = ref.evaluate(scene)
    return idx[0] if len(idx) == 1 else None
