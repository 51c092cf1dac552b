"""Geometry families of VisualMath: triangle angles, right-triangle sides, circles.

* ``angles``: content ``(a, b)`` (two labelled angles, sorted); gold ``180 - a - b`` degrees.
  The triangle is drawn with its true angles.
* ``right``: content ``("legs", a, b)`` (gold ``sqrt(a^2 + b^2)``) or ``("leg", c, a)``
  (hypotenuse ``c`` and a leg; gold ``sqrt(c^2 - a^2)``), exact surds like ``5\\sqrt{2}``;
  drawn to scale with a right-angle mark.
* ``circle``: content ``(quantity, shown, r)``, quantity ``area``/``circumference``, the
  radius (``r = 5``) or diameter (``d = 10``) labelled; gold in terms of pi (``25\\pi``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import sympy

from lavida_envs.render import INK, new_canvas, to_array
from lavida_envs.tasks.math_draw import MIN_FONT, draw_label, jitter, label_extent, polar
from lavida_envs.tasks.math_spec import Family, MathSpec, layout_jitter, pi_latex, pick_distractors, surd_latex

__all__ = ["ANGLES", "CIRCLE", "RIGHT", "angles_spec", "circle_spec", "right_spec"]

ANGLES_QUESTION = "Two angles of the triangle are labelled. Find the angle marked ?, in degrees."
RIGHT_QUESTION = "Find the exact length of the side marked ? in the right triangle (simplify square roots)."
CIRCLE_QUESTION = "Find the {} of the circle. Give the exact answer in terms of pi."

Point = tuple[float, float]


def _font(size: int, level: int, rng: random.Random, base: float = 0.11) -> int:
    return max(MIN_FONT, round(base * size * (1 + jitter(rng, layout_jitter(level)[1]))))


def _fit(points: list[Point], size: int, margin: float, rng: random.Random, level: int) -> list[Point]:
    """Scale and translate ``points`` (y up) into the canvas (y down) with a jittered margin."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
    box = size * (1 - 2 * margin) * (1 - abs(jitter(rng, layout_jitter(level)[0])))
    scale = box / span
    w, h = (max(xs) - min(xs)) * scale, (max(ys) - min(ys)) * scale
    ox = (size - w) / 2 + jitter(rng, (size - 2 * margin * size - w) / 2 * 0.8)
    oy = (size - h) / 2 + jitter(rng, (size - 2 * margin * size - h) / 2 * 0.8)
    return [(ox + (x - min(xs)) * scale, oy + (max(ys) - y) * scale) for x, y in points]


def _orient(points: list[Point], rng: random.Random, level: int) -> list[Point]:
    """Rotate (level >= 4) and maybe mirror a shape; layout only."""
    turn = math.radians(rng.uniform(0, 360)) if level >= 4 else 0.0
    flip = -1 if rng.random() < 0.5 else 1
    c, s = math.cos(turn), math.sin(turn)
    return [(flip * x * c - y * s, flip * x * s + y * c) for x, y in points]


def _outline(draw, points: list[Point], size: int) -> None:
    draw.polygon([(round(x), round(y)) for x, y in points], outline=INK, width=max(1, size // 64))


# ----- triangle angles ---------------------------------------------------------------------
def draw_angles(rng: random.Random, level: int) -> tuple[int, int]:
    """Two labelled angles of a triangle (sorted); the third is asked."""
    step, low = (5, 30) if level <= 3 else (1, 30)
    while True:
        a, b = rng.randrange(low, 111, step), rng.randrange(low, 111, step)
        if low <= 180 - a - b <= 110:
            return (min(a, b), max(a, b))


def angles_spec(given: tuple[int, int], rng: random.Random | None = None) -> MathSpec:
    """The spec of a triangle with angles ``given`` labelled (``rng`` orders distractors)."""
    a, b = sorted(given)
    c = 180 - a - b
    steps = (f"The angles of a triangle sum to 180. 180 - {a} - {b} = {c}.",)
    wrong = [str(180 - a), str(180 - b), str(c + 10), str(abs(c - 10)), str(abs(90 - c) or 45), str(a + b)]
    distractors = pick_distractors(rng or random.Random(0), str(c), wrong, [str(c + k) for k in (5, 15, 20, 25)])
    return MathSpec("angles", (a, b), ANGLES_QUESTION, str(c), steps, "number", distractors)


def verify_angles(spec: MathSpec) -> None:
    """The three angles sum to 180 (sympy) and the gold is the third."""
    a, b = spec.content
    third = sympy.Integer(180) - sympy.Integer(a) - sympy.Integer(b)
    assert third > 0 and sympy.Add(a, b, sympy.Integer(spec.answer)) == 180, (spec, third)


def render_angles(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """A triangle with its true angles, two labelled in degrees and the third marked ?."""
    labels = [f"{spec.content[0]}°", f"{spec.content[1]}°", "?"]
    angles = [spec.content[0], spec.content[1], int(spec.answer)]
    order = [0, 1, 2] if level <= 3 else rng.sample(range(3), 3)
    alpha, beta, gamma = (math.radians(angles[i]) for i in order)
    side = math.sin(beta) / math.sin(gamma)
    pts = _orient([(0.0, 0.0), (1.0, 0.0), (side * math.cos(alpha), side * math.sin(alpha))], rng, level)
    pts = _fit(pts, size, 0.1, rng, level)
    img, draw = new_canvas(size)
    _outline(draw, pts, size)
    ix, iy = _incenter(pts)
    font = _font(size, level, rng, 0.1)
    for (x, y), i in zip(pts, order):
        # along the bisector, far enough that the label clears both sides of its angle
        dist = max(math.hypot(ix - x, iy - y), 1e-9)
        need = math.hypot(*label_extent(labels[i], font)) / math.sin(math.radians(angles[i]) / 2) + 1
        t = min(max(need, 0.06 * size), 0.9 * dist) / dist
        draw_label(draw, labels[i], x + (ix - x) * t, y + (iy - y) * t, font)
    return to_array(img)


def _incenter(pts: list[Point]) -> Point:
    (ax, ay), (bx, by), (cx, cy) = pts
    a, b, c = math.dist(pts[1], pts[2]), math.dist(pts[0], pts[2]), math.dist(pts[0], pts[1])
    p = a + b + c
    return (a * ax + b * bx + c * cx) / p, (a * ay + b * by + c * cy) / p


# ----- right triangles -----------------------------------------------------------------------
def draw_right(rng: random.Random, level: int) -> tuple[str, int, int]:
    """Two labelled sides of a right triangle; the third is an exact surd."""
    if level <= 4 or rng.random() < 0.4:
        top = 12 if level <= 4 else 20
        a, b = sorted((rng.randint(1, top), rng.randint(1, top)))
        return ("legs", a, b)
    c = rng.randint(3, 15)
    return ("leg", c, rng.randint(1, c - 1))


def right_spec(content: tuple[str, int, int], rng: random.Random | None = None) -> MathSpec:
    """The spec of ``("legs", a, b)`` or ``("leg", hypotenuse, leg)``."""
    if content[0] == "legs":
        _, a, b = content
        n = a * a + b * b
        steps = (f"By Pythagoras the hypotenuse is sqrt({a}^2 + {b}^2) = sqrt({n}) = {surd_latex(n)}.",)
        wrong = [str(a + b), surd_latex(n + 1), surd_latex(abs(b * b - a * a) or 2), surd_latex(2 * n),
                 surd_latex(a + b)]
    else:
        _, c, a = content
        n = c * c - a * a
        steps = (f"By Pythagoras the other leg is sqrt({c}^2 - {a}^2) = sqrt({n}) = {surd_latex(n)}.",)
        wrong = [str(c - a), surd_latex(c * c + a * a), surd_latex(n + 1), surd_latex(max(n - 1, 2)), surd_latex(c + a)]
    gold = surd_latex(n)
    distractors = pick_distractors(rng or random.Random(0), gold, wrong, [surd_latex(n + k) for k in (2, 3, 5, 7, 11)])
    return MathSpec("right", content, RIGHT_QUESTION, gold, steps, "math", distractors)


def verify_right(spec: MathSpec) -> None:
    """Pythagoras with sympy: the gold squared equals the sum/difference of the squares."""
    mode, x, y = spec.content
    side = sympy.sqrt(x * x + y * y) if mode == "legs" else sympy.sqrt(x * x - y * y)
    k, _, m = spec.answer.partition("\\sqrt{")
    gold = sympy.Integer(k or 1) * (sympy.sqrt(int(m.rstrip("}"))) if m else 1)
    assert (side - gold) == 0 and side.is_positive, (spec, side)  # sqrt(50) auto-reduces to 5*sqrt(2)


def render_right(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """The right triangle to scale, right-angle mark, known sides numbered, unknown marked ?."""
    mode, x, y = spec.content
    if mode == "legs":
        legs, labels = (x, y), (str(x), str(y), "?")
    else:
        legs, labels = (y, math.sqrt(x * x - y * y)), (str(y), "?", str(x))
    if rng.random() < 0.5:  # which leg lies along which axis is layout
        legs, labels = (legs[1], legs[0]), (labels[1], labels[0], labels[2])
    raw = _orient([(0.0, 0.0), (float(legs[0]), 0.0), (0.0, float(legs[1])), (0.12 * max(legs), 0.0),
                   (0.12 * max(legs), 0.12 * max(legs)), (0.0, 0.12 * max(legs))], rng, level)
    pts = _fit(raw, size, 0.16, rng, level)
    img, draw = new_canvas(size)
    _outline(draw, pts[:3], size)
    draw.line([tuple(map(round, p)) for p in pts[3:]], fill=INK, width=max(1, size // 96))
    gx, gy = (sum(p[0] for p in pts[:3]) / 3, sum(p[1] for p in pts[:3]) / 3)
    font = _font(size, level, rng)
    for (p, q), text in zip(((pts[0], pts[1]), (pts[0], pts[2]), (pts[1], pts[2])), labels):
        mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
        d = math.hypot(mx - gx, my - gy) or 1.0
        off = 0.09 * size
        draw_label(draw, text, mx + (mx - gx) / d * off, my + (my - gy) / d * off, font)
    return to_array(img)


# ----- circles -------------------------------------------------------------------------------
def draw_circle(rng: random.Random, level: int) -> tuple[str, str, int]:
    """Area or circumference of a circle whose radius or diameter is labelled."""
    quantity = rng.choice(("area", "circumference"))
    shown = "r" if level <= 3 else rng.choice("rd")
    return (quantity, shown, rng.randint(1, 12 if level <= 3 else 15))


def circle_spec(content: tuple[str, str, int], rng: random.Random | None = None) -> MathSpec:
    """The spec of ``(quantity, shown, radius)``: ``("area", "d", 5)`` shows ``d = 10``."""
    quantity, shown, r = content
    coef = r * r if quantity == "area" else 2 * r
    given = f"The radius is {r}." if shown == "r" else f"The diameter is {2 * r}, so the radius is {r}."
    formula = f"A = pi r^2 = pi * {r}^2" if quantity == "area" else f"C = 2 pi r = 2 * pi * {r}"
    steps = (given, f"{formula} = {pi_latex(coef)}.")
    wrong = [pi_latex(k) for k in (2 * r, r * r, r, 4 * r * r, 4 * r) if k != coef] + [str(coef)]
    fallback = [pi_latex(coef + k) for k in (1, 2, 3)]
    distractors = pick_distractors(rng or random.Random(0), pi_latex(coef), wrong, fallback)
    return MathSpec("circle", (quantity, shown, r), CIRCLE_QUESTION.format(quantity), pi_latex(coef), steps,
                    "math", distractors)


def verify_circle(spec: MathSpec) -> None:
    """Area/circumference from the radius with sympy's pi, compared with the gold."""
    quantity, _, r = spec.content
    value = sympy.pi * r**2 if quantity == "area" else 2 * sympy.pi * r
    coef = spec.answer.removesuffix("\\pi") or "1"
    assert value - sympy.Integer(coef) * sympy.pi == 0, (spec, value)


def render_circle(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """A circle, its centre, and a labelled radius (``r = 5``) or diameter (``d = 10``)."""
    _, shown, r = spec.content
    pos, scale = layout_jitter(level)
    rad = size * 0.36 * (1 + jitter(rng, scale / 3))
    cx, cy = size * (0.5 + jitter(rng, pos / 2)), size * (0.5 + jitter(rng, pos / 2))
    angle = 0.0 if level <= 3 else rng.uniform(0, 360)
    img, draw = new_canvas(size)
    lw = max(1, size // 64)
    draw.ellipse([round(cx - rad), round(cy - rad), round(cx + rad), round(cy + rad)], outline=INK, width=lw)
    dot = max(1, size // 64)
    draw.rectangle([round(cx) - dot, round(cy) - dot, round(cx) + dot, round(cy) + dot], fill=INK)
    end = polar(cx, cy, rad, angle)
    start = polar(cx, cy, rad, angle + 180) if shown == "d" else (cx, cy)
    draw.line([tuple(map(round, start)), tuple(map(round, end))], fill=INK, width=lw)
    mx, my = polar(cx, cy, 0.45 * rad, angle)  # beside the radius, nearer the centre than the rim
    text = f"r = {r}" if shown == "r" else f"d = {2 * r}"
    font = _font(size, level, rng, 0.1)
    hw, hh = label_extent(text, font)
    normal = math.radians(angle + 90)
    lx, ly = polar(mx, my, hw * abs(math.cos(normal)) + hh * abs(math.sin(normal)) + 0.03 * size, angle + 90)
    draw_label(draw, text, lx, ly, font)
    return to_array(img)


ANGLES = Family("angles", draw_angles, lambda c, rng, level: angles_spec(c, rng), render_angles, verify_angles, True)
RIGHT = Family("right", draw_right, lambda c, rng, level: right_spec(c, rng), render_right, verify_right, True)
CIRCLE = Family("circle", draw_circle, lambda c, rng, level: circle_spec(c, rng), render_circle, verify_circle, True)
