"""Chart family of VisualMath: read values off a bar or line chart, compare, sum.

Content ``(kind, values, question, targets)``: ``kind`` is ``bar`` or ``line``, ``values``
the series over the categories ``P, Q, R, ...``, ``question`` one of ``value`` (value of
one category), ``diff`` (first target minus second), ``range`` (largest minus smallest)
or ``sum``. Level 3 prints each value above its bar; levels 4-5 have to be read off a
labelled, gridded y axis (values always lie on gridlines).
"""

from __future__ import annotations

import random

import numpy as np
import sympy

from lavida_envs.render import INK, PALETTE, new_canvas, to_array
from lavida_envs.tasks.math_draw import MIN_FONT, draw_label, jitter
from lavida_envs.tasks.math_spec import Family, MathSpec, layout_jitter

__all__ = ["CHART", "chart_answer", "chart_spec"]

LABELS = "PQRSTU"
_QUESTIONS = {
    "value": "In the {kind} chart, what is the value of {0}?",
    "diff": "In the {kind} chart, how much larger is {0} than {1}?",
    "range": "In the {kind} chart, what is the difference between the largest and the smallest value?",
    "sum": "In the {kind} chart, what is the sum of all the values?",
}
#: level -> (max value, unit step of values, labelled tick step, gridline step)
_SCALES = {3: (10, 1, 10, 10), 4: (10, 1, 2, 1), 5: (50, 5, 10, 5)}
_BAR_COLORS = ("blue", "red", "green", "orange", "purple")


def chart_answer(values: tuple[int, ...], question: str, targets: tuple[int, ...]) -> int:
    """The exact answer to ``question`` about ``values`` (plain Python ints)."""
    if question == "value":
        return values[targets[0]]
    if question == "diff":
        return values[targets[0]] - values[targets[1]]
    if question == "range":
        return max(values) - min(values)
    return sum(values)


def _explain(values: tuple[int, ...], question: str, targets: tuple[int, ...], answer: int) -> str:
    if question == "value":
        return f"{LABELS[targets[0]]} is {answer}."
    if question == "diff":
        return f"{values[targets[0]]} - {values[targets[1]]} = {answer}."
    if question == "range":
        return f"{max(values)} - {min(values)} = {answer}."
    return f"The sum is {' + '.join(map(str, values))} = {answer}."


def draw_chart(rng: random.Random, level: int) -> tuple:
    """A chart of 3-6 values and one question about them: ``(kind, values, question, targets)``."""
    level = min(max(level, 3), 5)
    top, unit, _, _ = _SCALES[level]
    n = rng.randint(3, 4) if level == 3 else rng.randint(4, 5 if level == 4 else 6)
    kind = "line" if level == 5 and rng.random() < 0.5 else "bar"
    while True:
        values = tuple(unit * rng.randint(1, top // unit) for _ in range(n))
        if len(set(values)) > 1:
            break
    question = "value" if level == 3 else rng.choice(("value", "diff", "range") + (("sum",) if level == 5 else ()))
    targets: tuple[int, ...] = ()
    if question == "value":
        targets = (rng.randrange(n),)
    elif question == "diff":
        i, j = rng.sample(range(n), 2)
        if values[i] == values[j]:
            j = next(k for k in range(n) if values[k] != values[i])
        targets = (i, j) if values[i] > values[j] else (j, i)
    return (kind, values, question, targets)


def chart_spec(content: tuple) -> MathSpec:
    """The spec of ``(kind, values, question, targets)``."""
    kind, values, question, targets = content
    answer = chart_answer(values, question, targets)
    names = [LABELS[t] for t in targets]
    read = ", ".join(f"{LABELS[i]} = {v}" for i, v in enumerate(values))
    how = _explain(values, question, targets, answer)
    text = _QUESTIONS[question].format(*names, kind=kind)
    steps = (f"Reading the chart: {read}.", how)
    return MathSpec("chart", (kind, values, question, targets), text, str(answer), steps, "number")


def verify_chart(spec: MathSpec) -> None:
    """Recompute the answer from the values with sympy."""
    _, values, question, targets = spec.content
    vals = [sympy.Integer(v) for v in values]
    expected = {"value": lambda: vals[targets[0]], "diff": lambda: vals[targets[0]] - vals[targets[-1]],
                "range": lambda: sympy.Max(*vals) - sympy.Min(*vals), "sum": lambda: sympy.Add(*vals)}[question]()
    assert expected == sympy.Integer(spec.answer) and expected >= 0, (spec, expected)


def render_chart(spec: MathSpec, rng: random.Random, size: int, level: int) -> np.ndarray:
    """Axes, gridlines and tick labels, then the bars or the line with its points."""
    kind, values, _, _ = spec.content
    level = min(max(level, 3), 5)
    top, _, tick, grid = _SCALES[level]
    pos, _ = layout_jitter(level)
    left, right = size * (0.17 + abs(jitter(rng, pos / 2))), size * (0.96 - abs(jitter(rng, pos / 2)))
    ytop, ybase = size * (0.1 + abs(jitter(rng, pos / 2))), size * 0.85
    font = max(MIN_FONT, round(0.085 * size))
    img, draw = new_canvas(size)

    def y_of(v: float) -> int:
        return round(ybase - (ybase - ytop) * v / top)

    for v in range(0, top + 1, grid):
        if v and level >= 4:
            draw.line([(round(left), y_of(v)), (round(right), y_of(v))], fill=PALETTE["gray"], width=1)
        if v % tick == 0 and level >= 4:
            draw_label(draw, str(v), left - 0.08 * size, y_of(v), font)
    lw = max(1, size // 96)
    axes = [(round(left), round(ytop)), (round(left), round(ybase)), (round(right), round(ybase))]
    draw.line(axes, fill=INK, width=lw)
    n = len(values)
    slot = (right - left) / n
    color = PALETTE[rng.choice(_BAR_COLORS)]
    centers = [left + slot * (i + 0.5) for i in range(n)]
    if kind == "bar":
        half = slot * (0.3 + jitter(rng, 0.05))
        for cx, v in zip(centers, values):
            draw.rectangle([round(cx - half), y_of(v), round(cx + half), round(ybase) - 1], fill=color)
    else:
        pts = [(round(cx), y_of(v)) for cx, v in zip(centers, values)]
        draw.line(pts, fill=color, width=max(1, size // 64))
        dot = max(2, size // 48)
        for x, y in pts:
            draw.rectangle([x - dot, y - dot, x + dot, y + dot], fill=INK)
    for i, (cx, v) in enumerate(zip(centers, values)):
        draw_label(draw, LABELS[i], cx, ybase + 0.07 * size, font)
        if level == 3:
            draw_label(draw, str(v), cx, y_of(v) - 0.06 * size, font)
    return to_array(img)


CHART = Family("chart", draw_chart, lambda c, rng, level: chart_spec(c), render_chart, verify_chart)
