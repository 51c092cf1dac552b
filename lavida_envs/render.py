"""Shared drawing basics (PIL): the fixed palette, fonts and canvas helpers.

Every procedural image is drawn without anti-aliasing in palette colours only, so an
image codec can map it to discrete codes exactly. Task-specific drawing lives with the
task (or in ``lavida_envs.scene`` for shape scenes).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Background colour of every procedural image.
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
#: Ink for text, axes and outlines.
INK: tuple[int, int, int] = (0, 0, 0)
#: The fixed palette of named colours used by shapes, bars and highlights.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "blue": (0, 130, 200),
    "yellow": (255, 225, 25),
    "orange": (245, 130, 48),
    "purple": (145, 30, 180),
    "cyan": (70, 240, 240),
    "gray": (128, 128, 128),
}
#: Every colour a procedural image may contain, in code order: background, ink, palette.
ALL_COLORS: tuple[tuple[int, int, int], ...] = (BACKGROUND, INK, *PALETTE.values())


@lru_cache(maxsize=64)
def get_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font at ``size`` px (same glyphs on every machine)."""
    return ImageFont.load_default(size=size)


def new_canvas(size: int | tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A blank RGB image on the background colour and a non-antialiased drawer for it."""
    wh = (size, size) if isinstance(size, int) else size
    img = Image.new("RGB", wh, BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"  # no anti-aliasing: text pixels are exactly INK or background
    return img, draw


def to_array(img: Image.Image) -> np.ndarray:
    """The image as a contiguous uint8 array of shape (H, W, 3)."""
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn with ``font``."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0
