"""Image codecs: images <-> a ``grid x grid`` array of discrete codes (a VQ-style interface).

Contract of an :class:`ImageCodec`: ``encode(image uint8[H, W, 3]) -> int64[grid, grid]``
with values in ``[0, codebook_size)``, and ``decode(codes[grid, grid], size=None) ->
uint8[size, size, 3]`` (``size`` defaults to the codec's ``image_size``). Pixel
``(y, x)`` of an ``H x W`` image belongs to grid cell ``(y * grid // H, x * grid // W)``
(the same mapping both ways).

:class:`PaletteCodec` (built in) maps each cell to the colour of
``lavida_envs.render.ALL_COLORS`` that most of its pixels are nearest to (ties -> the
lower code). It is exact at grid resolution: ``encode(decode(c)) == c`` for every code
array ``c`` and every output size >= grid, and ``decode(encode(img))`` equals ``img``
whenever every cell of ``img`` is one palette colour (procedural scenes drawn on the grid).

Codecs are saved as a small dict (``to_dict``) and rebuilt by name from
:data:`CODECS` (``codec_from_dict``); register another codec with :func:`register_codec`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from lavida_envs.render import ALL_COLORS

__all__ = ["CODECS", "ImageCodec", "PaletteCodec", "codec_from_dict", "register_codec"]


@runtime_checkable
class ImageCodec(Protocol):
    """A discrete image tokenizer: ``grid x grid`` codes from a codebook of ``codebook_size``."""

    grid: int
    codebook_size: int

    def encode(self, image: np.ndarray) -> np.ndarray:
        """Codes int64[grid, grid] of a uint8[H, W, 3] image."""
        ...

    def decode(self, codes: np.ndarray, size: int | None = None) -> np.ndarray:
        """A uint8[size, size, 3] image from codes int[grid, grid] (default size: the codec's)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description with a ``type`` key naming the codec in :data:`CODECS`."""
        ...


def _cell_index(n_pixels: int, grid: int) -> np.ndarray:
    """Cell of each pixel along one axis: ``p * grid // n_pixels``."""
    return (np.arange(n_pixels) * grid) // n_pixels


class PaletteCodec:
    """Nearest-palette-colour codes per grid cell, by majority vote; exact for palette scenes."""

    def __init__(
        self, grid: int = 16, image_size: int = 128, colors: tuple[tuple[int, int, int], ...] = ALL_COLORS
    ) -> None:
        if not isinstance(grid, (int, np.integer)) or grid < 1:
            raise ValueError(f"grid must be a positive int, got {grid!r}")
        if not isinstance(image_size, (int, np.integer)) or image_size < grid:
            raise ValueError(f"image_size must be an int >= grid {grid}, got {image_size!r}")
        palette = np.asarray(colors, dtype=np.int64)
        if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) < 1:
            raise ValueError(f"colors must be a non-empty list of RGB triples, got shape {palette.shape}")
        if palette.min() < 0 or palette.max() > 255:
            raise ValueError("colors must be RGB triples in 0..255")
        self.grid = int(grid)
        self.image_size = int(image_size)
        self.palette = palette  # (K, 3)
        self.codebook_size = len(palette)
        packed = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
        # first code of each distinct colour, sorted by packed value (exact-colour fast path)
        values, first = np.unique(packed, return_index=True)
        self._packed_sorted, self._packed_order = values, first.astype(np.int64)

    def nearest(self, image: np.ndarray) -> np.ndarray:
        """Index of the nearest palette colour of every pixel: int64[H, W]."""
        img = self._check_image(image).astype(np.int64)
        packed = (img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2]  # (H, W)
        slot = np.clip(np.searchsorted(self._packed_sorted, packed), 0, len(self._packed_sorted) - 1)
        out = self._packed_order[slot]
        inexact = self._packed_sorted[slot] != packed  # pixels that are not exactly a palette colour
        if inexact.any():
            pixels = img[inexact]  # (n, 3)
            dist = ((pixels[:, None, :] - self.palette[None]) ** 2).sum(-1)  # (n, K)
            out[inexact] = dist.argmin(-1)
        return out

    def encode(self, image: np.ndarray) -> np.ndarray:
        """Codes int64[grid, grid]: the majority nearest colour of each cell's pixels."""
        nearest = self.nearest(image)
        h, w = nearest.shape
        g, k = self.grid, self.codebook_size
        cell = _cell_index(h, g)[:, None] * g + _cell_index(w, g)[None, :]  # (H, W)
        counts = np.zeros((g * g, k), dtype=np.int64)
        np.add.at(counts, (cell.ravel(), nearest.ravel()), 1)
        return counts.argmax(-1).reshape(g, g)

    def decode(self, codes: np.ndarray, size: int | None = None) -> np.ndarray:
        """The uint8[size, size, 3] image whose every cell is filled with its code's colour."""
        size = self.image_size if size is None else size
        codes = np.asarray(codes)
        g = self.grid
        if codes.shape != (g, g) or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be an int array of shape {(g, g)}, got {codes.dtype} {codes.shape}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got {codes.min()}..{codes.max()}")
        if int(size) < g:
            raise ValueError(f"decode size {size} is smaller than the grid {g}")
        idx = _cell_index(int(size), g)
        return self.palette[codes[idx[:, None], idx[None, :]]].astype(np.uint8)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "palette", "grid": g, "image_size": s, "colors": [...]}``."""
        return {"type": "palette", "grid": self.grid, "image_size": self.image_size, "colors": self.palette.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PaletteCodec:
        """Inverse of :meth:`to_dict`."""
        colors = tuple(tuple(int(v) for v in c) for c in data["colors"])
        return cls(grid=int(data["grid"]), image_size=int(data["image_size"]), colors=colors)

    def _check_image(self, image: Any) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        if img.shape[0] < self.grid or img.shape[1] < self.grid:
            raise ValueError(f"image {img.shape[:2]} is smaller than the codec grid {self.grid}")
        return img


#: Codec name -> class with ``from_dict``; checkpoints name their codec here.
CODECS: dict[str, type] = {"palette": PaletteCodec}


def register_codec(name: str, cls: type) -> None:
    """Make ``cls`` (with ``from_dict`` and ``to_dict``) loadable from checkpoints as ``name``."""
    if not hasattr(cls, "from_dict"):
        raise TypeError(f"codec class {cls.__name__} needs a from_dict classmethod")
    CODECS[name] = cls


def codec_from_dict(data: dict[str, Any]) -> ImageCodec:
    """Rebuild a codec from :meth:`ImageCodec.to_dict` output."""
    name = data.get("type")
    if name not in CODECS:
        raise ValueError(f"unknown codec type {name!r}; known: {sorted(CODECS)} (register_codec adds one)")
    return CODECS[name].from_dict(data)
