"""Drawing helpers for the visual math families: math text lines, stacked fractions, labels.

Pillow's bundled font (the only font that renders identically on every machine) has no
glyphs for ``×``, ``÷`` and ``−``, so those are drawn as lines. Everything is drawn in
palette colours without anti-aliasing. Sizes are in pixels and callers derive them from
the image size, so a layout scales with ``image_size``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from functools import lru_cache

from PIL import ImageDraw

from lavida_envs.render import INK, get_font

__all__ = [
    "MIN_FONT",
    "Frac",
    "draw_item",
    "draw_label",
    "draw_line_of_items",
    "fit_size",
    "item_width",
    "jitter",
    "label_extent",
    "polar",
]

#: Smallest font size used anywhere (tiny images stay drawable, if not legible).
MIN_FONT = 6
#: Operators drawn as strokes because the bundled font lacks them.
_STROKED = {"×", "÷", "−"}
#: Cap height and math axis as fractions of the font size (Pillow's bundled Aileron).
_CAP, _AXIS = 0.72, 0.36


class Frac(tuple):
    """A stacked fraction item ``Frac((numerator, denominator))`` in a line of items."""

    @property
    def num(self) -> str:
        return str(self[0])

    @property
    def den(self) -> str:
        return str(self[1])


def _stroke(size: int) -> int:
    return max(1, round(size / 12))


@lru_cache(maxsize=4096)
def _char_width(ch: str, size: int) -> int:
    return round(0.6 * size) if ch in _STROKED else int(get_font(size).getlength(ch))


@lru_cache(maxsize=8192)
def _text_width(text: str, size: int) -> int:
    return sum(_char_width(ch, size) for ch in text)


def item_width(item: str | Frac, size: int) -> int:
    """Width in pixels of a text item or a stacked fraction at font ``size``."""
    if isinstance(item, Frac):
        return max(_text_width(item.num, size), _text_width(item.den, size)) + max(2, size // 4)
    return _text_width(item, size)


def _draw_stroked(draw: ImageDraw.ImageDraw, ch: str, x: int, baseline: int, size: int, fill) -> None:
    w = round(0.6 * size)
    cx, cy, half, lw = x + w / 2, baseline - _AXIS * size, 0.22 * size, _stroke(size)
    if ch == "×":
        draw.line([(cx - half, cy - half), (cx + half, cy + half)], fill=fill, width=lw)
        draw.line([(cx - half, cy + half), (cx + half, cy - half)], fill=fill, width=lw)
    else:
        draw.line([(cx - half * 1.2, cy), (cx + half * 1.2, cy)], fill=fill, width=lw)
        if ch == "÷":
            r = max(1, lw)
            for dy in (-half, half):
                draw.rectangle([cx - r / 2, cy + dy - r / 2, cx + r / 2, cy + dy + r / 2], fill=fill)


def _draw_text(draw: ImageDraw.ImageDraw, text: str, x: int, baseline: int, size: int, fill) -> None:
    font = get_font(size)
    run, run_x = "", x
    for ch in text + "\0":
        if ch in _STROKED or ch == "\0":
            if run:
                draw.text((run_x, baseline), run, font=font, fill=fill, anchor="ls")
                run_x += _text_width(run, size)
                run = ""
            if ch in _STROKED:
                _draw_stroked(draw, ch, run_x, baseline, size, fill)
                run_x += round(0.6 * size)
        else:
            run += ch


def draw_item(draw: ImageDraw.ImageDraw, item: str | Frac, x: int, baseline: int, size: int, fill=INK) -> None:
    """Draw one item with its left edge at ``x`` on the text ``baseline``."""
    if not isinstance(item, Frac):
        _draw_text(draw, item, x, baseline, size, fill)
        return
    width = item_width(item, size)
    axis = round(baseline - _AXIS * size)
    gap, lw = max(1, size // 8), _stroke(size)
    draw.line([(x, axis), (x + width - 1, axis)], fill=fill, width=lw)
    for text, base in ((item.num, axis - gap - lw), (item.den, axis + gap + lw + round(_CAP * size))):
        _draw_text(draw, text, x + (width - _text_width(text, size)) // 2, base, size, fill)


def draw_line_of_items(
    draw: ImageDraw.ImageDraw,
    items: Sequence[str | Frac],
    cx: float,
    baseline: float,
    size: int,
    gap: int,
    fill=INK,
    canvas: int | None = None,
) -> None:
    """Draw ``items`` left to right, centred on ``cx`` (kept inside ``canvas`` px), ``gap`` apart."""
    widths = [item_width(it, size) for it in items]
    total = sum(widths) + gap * (len(items) - 1)
    x = round(cx - total / 2)
    if canvas is not None:
        margin = max(1, canvas // 32)
        x = max(margin, min(x, canvas - margin - total))
    for item, w in zip(items, widths):
        draw_item(draw, item, x, round(baseline), size, fill)
        x += w + gap


def fit_size(items: Sequence[str | Frac], size: int, max_width: float, gap_ratio: float) -> int:
    """The largest font size <= ``size`` at which ``items`` fit in ``max_width`` px."""
    while size > MIN_FONT:
        total = sum(item_width(it, size) for it in items) + round(gap_ratio * size) * (len(items) - 1)
        if total <= max_width:
            break
        size -= 1
    return max(MIN_FONT, size)


def label_extent(text: str, size: int) -> tuple[float, float]:
    """Half width and half height in pixels of a label drawn by :func:`draw_label`."""
    return _text_width(text, size) / 2, _CAP * size / 2


def draw_label(draw: ImageDraw.ImageDraw, text: str, cx: float, cy: float, size: int, fill=INK) -> None:
    """Draw ``text`` centred on ``(cx, cy)`` (cap height centred vertically)."""
    x = round(cx - _text_width(text, size) / 2)
    _draw_text(draw, text, x, round(cy + _CAP * size / 2), size, fill)


def jitter(rng: random.Random, amount: float) -> float:
    """A uniform offset in ``[-amount, amount]`` (0 when ``amount`` is 0, drawing nothing)."""
    return rng.uniform(-amount, amount) if amount > 0 else 0.0


def polar(cx: float, cy: float, r: float, angle_deg: float) -> tuple[float, float]:
    """The point at distance ``r`` and angle ``angle_deg`` (counter-clockwise, y down) from a centre."""
    a = math.radians(angle_deg)
    return cx + r * math.cos(a), cy - r * math.sin(a)
