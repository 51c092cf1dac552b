"""Procedural shape scenes: a small scene graph, non-overlapping sampling and exact rendering.

Contract:

* A :class:`Shape` lives in a normalized frame: ``x``, ``y`` (its centre) and ``size`` (its
  half-extent, the radius of the circle that contains it) are fractions of the image side,
  so one scene renders at any ``image_size``. ``y`` grows downward, like pixel rows.
* Every shape is inside the square ``[x - size, x + size] x [y - size, y + size]``; two
  shapes of a sampled scene have these squares separated by at least ``GAP`` on one axis,
  so drawn shapes never touch and draw order never matters.
* :func:`render_scene` draws without anti-aliasing, each shape filled with its exact
  palette colour (``lavida_envs.render.PALETTE``) on ``BACKGROUND``: every pixel of the
  image is one of those colours, so an image codec can map it exactly.
* :func:`shape_mask` / :func:`shape_box` come from the very same rasterization as
  :func:`render_scene` (one cached patch per shape and size), so a box is the tight pixel
  box of what is drawn: ``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive (``x2 - x1`` is
  the width in pixels, as in COCO's ``[x, y, w, h]``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from lavida_envs.render import BACKGROUND, PALETTE

__all__ = [
    "COLORS",
    "GAP",
    "KINDS",
    "MARGIN",
    "SIDES",
    "SIZES",
    "Scene",
    "Shape",
    "can_place",
    "moved",
    "num_sides",
    "place_shape",
    "render_scene",
    "sample_grid_scene",
    "sample_scene",
    "scene_mask",
    "shape_box",
    "shape_mask",
]

#: Shape kinds and their number of sides (a circle has none; a five-pointed star has ten).
SIDES: dict[str, int] = {
    "circle": 0,
    "triangle": 3,
    "square": 4,
    "pentagon": 5,
    "hexagon": 6,
    "star": 10,
}
KINDS: tuple[str, ...] = tuple(SIDES)
COLORS: tuple[str, ...] = tuple(PALETTE)
#: Discrete half-extents (fractions of the image side): neighbours differ visibly at 64 px.
SIZES: tuple[float, ...] = (0.06, 0.085, 0.11, 0.135)
#: Minimum separation between the bounding squares of two shapes (fraction of the side).
GAP: float = 0.03
#: Minimum distance between a shape's bounding square and the image border.
MARGIN: float = 0.02
#: Inner/outer radius ratio of the star.
_STAR_INNER = 0.45
_Q = 1000  # positions and sizes are quantized to 1/_Q so keys are exact


def num_sides(kind: str) -> int:
    """Number of sides of a shape kind (circle 0, triangle 3, ..., hexagon 6, star 10)."""
    try:
        return SIDES[kind]
    except KeyError:
        raise ValueError(f"unknown shape kind {kind!r}; known kinds: {list(KINDS)}") from None


@dataclass(frozen=True, slots=True)
class Shape:
    """One filled shape: kind, palette colour name, half-extent and centre (fractions of the side)."""

    kind: str
    color: str
    size: float
    x: float
    y: float

    def __post_init__(self) -> None:
        if self.kind not in SIDES:
            raise ValueError(f"Shape.kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.color not in PALETTE:
            raise ValueError(f"Shape.color must be a palette name {list(PALETTE)}, got {self.color!r}")
        if not 0.0 < self.size <= 0.5:
            raise ValueError(f"Shape.size must be in (0, 0.5] (fraction of the image side), got {self.size!r}")
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise ValueError(f"Shape centre must be inside [0, 1]^2, got ({self.x!r}, {self.y!r})")

    @property
    def sides(self) -> int:
        """Number of sides of this shape's kind."""
        return SIDES[self.kind]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """The normalized bounding square ``(x1, y1, x2, y2)`` that contains the shape."""
        return (self.x - self.size, self.y - self.size, self.x + self.size, self.y + self.size)

    def describe(self) -> str:
        """Short name such as ``'red circle'``."""
        return f"{self.color} {self.kind}"

    def key(self) -> str:
        """Canonical text of the shape (quantized numbers)."""
        return f"{self.kind}:{self.color}:{self.size:.3f}@{self.x:.3f},{self.y:.3f}"


@dataclass(frozen=True, slots=True)
class Scene:
    """An immutable, hashable list of shapes (draw order is irrelevant: shapes never overlap)."""

    shapes: tuple[Shape, ...]

    def __len__(self) -> int:
        return len(self.shapes)

    def __iter__(self):
        return iter(self.shapes)

    def __getitem__(self, i: int) -> Shape:
        return self.shapes[i]

    def key(self) -> str:
        """Canonical string of the scene's content, independent of shape order."""
        return ";".join(sorted(s.key() for s in self.shapes))

    def replace(self, index: int, shape: Shape) -> "Scene":
        """A new scene with shape ``index`` replaced."""
        shapes = list(self.shapes)
        shapes[index] = shape
        return Scene(tuple(shapes))

    def without(self, index: int) -> "Scene":
        """A new scene without shape ``index``."""
        return Scene(self.shapes[:index] + self.shapes[index + 1 :])

    def with_shape(self, shape: Shape) -> "Scene":
        """A new scene with ``shape`` appended."""
        return Scene(self.shapes + (shape,))


def _q(v: float) -> float:
    return round(v * _Q) / _Q


def _separated(a: Shape, b: Shape, gap: float) -> bool:
    reach = a.size + b.size + gap
    return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


def can_place(shapes: Iterable[Shape], shape: Shape, gap: float = GAP, margin: float = MARGIN) -> bool:
    """Whether ``shape`` lies inside the image (with ``margin``) and is ``gap``-separated from ``shapes``."""
    x1, y1, x2, y2 = shape.bounds
    eps = 1e-9
    if x1 < margin - eps or y1 < margin - eps or x2 > 1 - margin + eps or y2 > 1 - margin + eps:
        return False
    return all(_separated(shape, other, gap) for other in shapes)


def place_shape(
    rng: random.Random,
    shapes: Sequence[Shape],
    kind: str,
    color: str,
    size: float,
    tries: int = 60,
    gap: float = GAP,
    margin: float = MARGIN,
) -> Shape | None:
    """A shape of the given kind/colour/size at a random free position, or None if none was found."""
    lo, hi = margin + size, 1.0 - margin - size
    if hi < lo:
        return None
    others = [(o.x, o.y, o.size + size + gap) for o in shapes]
    for _ in range(tries):
        x, y = _q(rng.uniform(lo, hi)), _q(rng.uniform(lo, hi))
        if all(abs(x - ox) >= reach or abs(y - oy) >= reach for ox, oy, reach in others):
            cand = Shape(kind, color, size, x, y)
            if can_place(shapes, cand, gap, margin):  # the exact check, once
                return cand
    return None


def sample_grid_scene(rng: random.Random, n_min: int, n_max: int, grid: int, size: float,
                      kinds: Sequence[str] = KINDS, colors: Sequence[str] = COLORS) -> Scene:
    """``n_min..n_max`` shapes of one ``size`` centred in distinct cells of a ``grid x grid`` layout."""
    if not 1 <= n_min <= n_max <= grid * grid:
        raise ValueError(f"need 1 <= n_min <= n_max <= {grid * grid} cells, got n_min={n_min}, n_max={n_max}")
    cells = rng.sample(range(grid * grid), rng.randint(n_min, n_max))
    shapes = tuple(Shape(rng.choice(kinds), rng.choice(colors), size, _q((c % grid + 0.5) / grid),
                         _q((c // grid + 0.5) / grid)) for c in cells)  # fmt: skip
    scene = Scene(shapes)
    for i, shape in enumerate(shapes):  # the layout must obey the same separation as random scenes
        if not can_place(shapes[:i] + shapes[i + 1 :], shape):
            raise ValueError(f"size {size} does not fit a {grid}x{grid} grid with gap {GAP} and margin {MARGIN}")
    return scene


def sample_scene(
    rng: random.Random,
    n_min: int = 3,
    n_max: int = 9,
    kinds: Sequence[str] = KINDS,
    colors: Sequence[str] = COLORS,
    sizes: Sequence[float] = SIZES,
    gap: float = GAP,
) -> Scene:
    """A random scene of ``n_min..n_max`` non-overlapping shapes (deterministic given ``rng``)."""
    if not 1 <= n_min <= n_max:
        raise ValueError(f"need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    for kind in kinds:
        num_sides(kind)
    smallest = min(sizes)
    for _attempt in range(50):
        n = rng.randint(n_min, n_max)
        shapes: list[Shape] = []
        for _ in range(n):
            kind, color, size = rng.choice(kinds), rng.choice(colors), rng.choice(sizes)
            shape = place_shape(rng, shapes, kind, color, size, gap=gap)
            if shape is None and size > smallest:
                shape = place_shape(rng, shapes, kind, color, smallest, gap=gap)
            if shape is None:
                break
            shapes.append(shape)
        if len(shapes) >= n_min:
            return Scene(tuple(shapes))
    raise RuntimeError(
        f"could not place {n_min} shapes of sizes {tuple(sizes)} with gap {gap} in 50 attempts; "
        "lower n_min or the sizes"
    )


# ----- rasterization ---------------------------------------------------------------------
def _unit_vertices(kind: str) -> tuple[tuple[float, float], ...]:
    """Polygon vertices around the origin, inside the unit circle (y down)."""
    if kind == "square":
        h = 0.82
        return ((-h, -h), (h, -h), (h, h), (-h, h))
    if kind == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else _STAR_INNER
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return tuple(pts)
    n = SIDES[kind]
    start = -math.pi / 2 if n % 2 else -math.pi / 2 + math.pi / n  # flat bottom
    return tuple((math.cos(start + 2 * math.pi * i / n), math.sin(start + 2 * math.pi * i / n)) for i in range(n))


_UNIT = {k: _unit_vertices(k) for k in KINDS if k != "circle"}
_BG = np.array(BACKGROUND, dtype=np.uint8)
_RGB = {name: np.array(rgb, dtype=np.uint8) for name, rgb in PALETTE.items()}


@lru_cache(maxsize=8192)
def _patch(shape: Shape, image_size: int) -> tuple[int, int, np.ndarray]:
    """``(left, top, mask)``: the shape rasterized on a small patch at pixel offset (left, top)."""
    s = float(image_size)
    cx, cy, r = shape.x * s, shape.y * s, shape.size * s
    left, top = int(math.floor(cx - r)) - 1, int(math.floor(cy - r)) - 1
    side = int(math.ceil(2 * r)) + 3
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    px, py = cx - left, cy - top
    if shape.kind == "circle":
        draw.ellipse((px - r, py - r, px + r - 1, py + r - 1), fill=1)
    else:
        draw.polygon([(px + r * u, py + r * v) for u, v in _UNIT[shape.kind]], fill=1)
    mask = np.asarray(img, dtype=np.uint8).astype(bool)
    # clip to the image (only matters for shapes placed at the very border)
    x0, y0 = max(0, -left), max(0, -top)
    x1, y1 = min(side, image_size - left), min(side, image_size - top)
    mask = mask[y0:y1, x0:x1]
    mask.setflags(write=False)
    return left + x0, top + y0, mask


def shape_mask(shape: Shape, image_size: int) -> np.ndarray:
    """Boolean ``(S, S)`` mask of the pixels ``render_scene`` paints for ``shape``."""
    left, top, patch = _patch(shape, int(image_size))
    out = np.zeros((image_size, image_size), dtype=bool)
    out[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return out


def scene_mask(scene: Scene, image_size: int, indices: Iterable[int] | None = None) -> np.ndarray:
    """Boolean ``(S, S)`` union of the masks of the shapes ``indices`` (default: all)."""
    out = np.zeros((image_size, image_size), dtype=bool)
    for i in range(len(scene)) if indices is None else indices:
        left, top, patch = _patch(scene.shapes[i], int(image_size))
        out[top : top + patch.shape[0], left : left + patch.shape[1]] |= patch
    return out


@lru_cache(maxsize=8192)
def shape_box(shape: Shape, image_size: int) -> tuple[int, int, int, int]:
    """Tight pixel box ``(x1, y1, x2, y2)`` of the drawn shape (``x2``/``y2`` exclusive)."""
    left, top, patch = _patch(shape, int(image_size))
    cols = np.flatnonzero(patch.any(axis=0))
    rows = np.flatnonzero(patch.any(axis=1))
    if cols.size == 0:
        raise ValueError(f"{shape} draws no pixels at image_size={image_size}; use a larger size")
    return (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1)


def render_scene(scene: Scene, image_size: int) -> np.ndarray:
    """The scene as a uint8 ``(S, S, 3)`` image: palette colours only, on the background."""
    image_size = int(image_size)
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = _BG
    for shape in scene.shapes:
        left, top, patch = _patch(shape, image_size)
        region = img[top : top + patch.shape[0], left : left + patch.shape[1]]
        np.copyto(region, _RGB[shape.color], where=patch[..., None])
    return img


def moved(shape: Shape, x: float, y: float) -> Shape:
    """``shape`` with its centre at ``(x, y)`` (quantized)."""
    return replace(shape, x=_q(x), y=_q(y))
