"""Image-edit rewards: exact edit fidelity, plus re-exports of the CLIP and judge scorers.

``edit_fidelity(output, source, target, region_mask) -> float`` in [0, 1] is exact and
deterministic (used by ``LaViDa/ImageEdit-v0`` with ``edit_reward="exact"``).

Formula. A pixel *matches* a reference when every channel differs by at most ``tol``
(default 8 of 255, so a lossy image codec round trip still matches). Let ``R`` be the
region that may change (``region_mask``; ``None`` means "every pixel where target and
source differ") and split the image into

* ``C = R and (target does not match source)`` -- pixels the edit must change;
* ``K = not C`` -- pixels that must keep their source value (outside ``R`` and the
  unchanged part of ``R``). ``K`` is split by the source's dominant colour ``bg`` (its most
  frequent RGB value) into ``K_fg`` (content) and ``K_bg`` (background), so a blank image
  cannot score well just because most of a procedural scene is background.

Then::

    inside   = share of C where output matches target        (1 if C is empty)
    keep_fg  = share of K_fg where output matches source     (1 if K_fg is empty)
    keep_bg  = share of K_bg where output matches source     (1 if K_bg is empty)
    outside  = keep_fg * keep_bg
    fidelity = inside * outside

The exact target scores 1.0; the unchanged source scores 0 (``inside`` = 0); a blank
(uniform) image loses either all content (``keep_fg`` = 0) or all background
(``keep_bg`` = 0), so it scores 0 whenever the untouched part of the image holds both.

Outputs are coerced before scoring (:func:`coerce_image`): ``(H, W)`` grey and
``(H, W, 4)`` RGBA are converted to RGB, floats in [0, 1] are scaled by 255 and other
numeric dtypes are clipped to [0, 255], and an image of another size is resized to the
target's size (nearest neighbour). ``None``, non-numeric data, NaN/inf and impossible
shapes score 0 with the reason in :attr:`EditFidelity.error`; nothing raises.

``CLIPScorer`` (CLIP-I, CLIP-T, directional similarity; ``edit_clip``) and ``JudgeScorer``
(VLM judge, sqrt(SC * PQ) / 10, cached on disk; ``edit_judge``) are re-exported here.
Importing this module never imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from lavida_envs.rewards.edit_clip import CLIPScorer
from lavida_envs.rewards.edit_judge import JudgeResult, JudgeScorer

__all__ = [
    "CLIPScorer",
    "DEFAULT_TOL",
    "EditFidelity",
    "EditReference",
    "JudgeResult",
    "JudgeScorer",
    "coerce_image",
    "edit_fidelity",
    "edit_fidelity_details",
]

#: Largest per-channel difference (of 255) at which two pixels still match.
DEFAULT_TOL = 8
#: Images with more pixels than this are refused (not resized) to bound memory and time.
MAX_PIXELS = 4096 * 4096


@dataclass
class EditFidelity:
    """The fidelity score with its parts; ``error`` says why a malformed output scored 0."""

    score: float
    inside: float = 0.0
    outside: float = 0.0
    keep_fg: float = 0.0
    keep_bg: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        """The numeric parts as a flat metrics dict."""
        return {
            "fidelity": self.score,
            "inside": self.inside,
            "outside": self.outside,
            "keep_fg": self.keep_fg,
            "keep_bg": self.keep_bg,
        }


def coerce_image(
    image: Any, size: tuple[int, int] | None = None
) -> tuple[np.ndarray | None, str | None, list[str]]:
    """Any image-like value -> ``(uint8[H, W, 3] or None, error or None, notes)``.

    ``size`` is ``(height, width)``: a differently sized image is resized to it
    (nearest neighbour) and a note says so.
    """
    notes: list[str] = []
    if image is None:
        return None, "no image in the action (got None)", notes
    if isinstance(image, Image.Image):  # check the size before PIL decodes or converts anything
        width, height = image.size
        if width * height > MAX_PIXELS:
            return None, f"image too large: {height}x{width} > {MAX_PIXELS} pixels", notes
        image = np.asarray(image.convert("RGB"))
    try:
        arr = np.asarray(image)
    except Exception as exc:  # ragged lists and the like
        return None, f"image is not array-like: {type(exc).__name__}: {str(exc)[:100]}", notes
    orig_dtype = arr.dtype
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        return None, f"image must be a numeric array, got dtype {arr.dtype}", notes
    # Shape and size are checked on the array as given, before any channel is copied.
    channels = arr.shape[2] if arr.ndim == 3 else (1 if arr.ndim == 2 else 0)
    if channels not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        return None, f"image must have shape (H, W, 3), got {tuple(arr.shape)}", notes
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        return None, f"image too large: {arr.shape[0]}x{arr.shape[1]} > {MAX_PIXELS} pixels", notes
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
        notes.append("grey image converted to RGB")
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
        notes.append("alpha channel dropped")
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
        notes.append("single-channel image converted to RGB")
    if arr.dtype != np.uint8:
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        else:
            as_float = arr.astype(np.float64)
            if not np.isfinite(as_float).all():
                return None, "image contains NaN or inf values", notes
            if np.issubdtype(arr.dtype, np.floating) and as_float.min() >= 0.0 and as_float.max() <= 1.0:
                as_float = as_float * 255.0
                notes.append("float image in [0, 1] scaled by 255")
            arr = np.clip(np.rint(as_float), 0, 255).astype(np.uint8)
            notes.append(f"dtype {orig_dtype} cast to uint8")
    if size is not None and arr.shape[:2] != tuple(size):
        resized = Image.fromarray(np.ascontiguousarray(arr)).resize((size[1], size[0]), Image.NEAREST)
        notes.append(f"resized from {arr.shape[1]}x{arr.shape[0]} to {size[1]}x{size[0]}")
        arr = np.asarray(resized)
    return np.ascontiguousarray(arr, dtype=np.uint8), None, notes


def _match(a: np.ndarray, b: np.ndarray, tol: int) -> np.ndarray:
    """Per-pixel bool: every channel of ``a`` within ``tol`` of ``b``."""
    diff = np.maximum(a, b) - np.minimum(a, b)  # |a - b| without leaving uint8
    return np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2]) <= tol


def _share(hits: np.ndarray, where: np.ndarray) -> float:
    total = int(where.sum())
    return 1.0 if total == 0 else float(hits[where].sum()) / total


def _dominant_colour(image: np.ndarray) -> np.ndarray:
    packed = (image[:, :, 0].astype(np.int64) << 16) | (image[:, :, 1].astype(np.int64) << 8) | image[:, :, 2]
    values, counts = np.unique(packed, return_counts=True)
    top = int(values[np.argmax(counts)])
    return np.array([(top >> 16) & 255, (top >> 8) & 255, top & 255], dtype=np.uint8)


def _check_reference(name: str, image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 (H, W, 3), got dtype {arr.dtype} shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class EditReference:
    """Source, target and the pixel sets of the formula, prepared once per problem."""

    source: np.ndarray
    target: np.ndarray
    changed: np.ndarray  # C: pixels the edit must change
    keep_fg: np.ndarray  # K_fg: kept content pixels
    keep_bg: np.ndarray  # K_bg: kept background pixels
    tol: int = DEFAULT_TOL

    @classmethod
    def build(
        cls,
        source: np.ndarray,
        target: np.ndarray,
        region_mask: np.ndarray | None = None,
        tol: int = DEFAULT_TOL,
        background: tuple[int, int, int] | None = None,
    ) -> "EditReference":
        """Check the (trusted) references and split the pixels; ``ValueError`` on bad inputs.

        ``background``: the source's background colour when known (procedural scenes), else
        the source's most common colour is used.
        """
        source = _check_reference("source", source)
        target = _check_reference("target", target)
        if source.shape != target.shape:
            raise ValueError(f"source shape {source.shape} != target shape {target.shape}")
        changed = ~_match(source, target, tol)
        if region_mask is not None:
            region = np.asarray(region_mask).astype(bool)
            if region.shape != source.shape[:2]:
                raise ValueError(f"region_mask shape {region.shape} != image shape {source.shape[:2]}")
            changed &= region
        colour = _dominant_colour(source) if background is None else np.asarray(background, dtype=np.uint8)
        background = _match(source, colour[None, None, :], tol)
        keep = ~changed
        return cls(source, target, changed, keep & ~background, keep & background, int(tol))

    def score(self, output: Any) -> EditFidelity:
        """Fidelity of one model output (never raises)."""
        out, error, notes = coerce_image(output, self.source.shape[:2])
        if out is None:
            return EditFidelity(score=0.0, error=error, notes=notes)
        inside = _share(_match(out, self.target, self.tol), self.changed)
        keeps = _match(out, self.source, self.tol)
        keep_fg, keep_bg = _share(keeps, self.keep_fg), _share(keeps, self.keep_bg)
        outside = keep_fg * keep_bg
        return EditFidelity(
            score=float(inside * outside), inside=inside, outside=outside, keep_fg=keep_fg, keep_bg=keep_bg,
            notes=notes,
        )


def edit_fidelity_details(
    output: Any,
    source: np.ndarray,
    target: np.ndarray,
    region_mask: np.ndarray | None = None,
    tol: int = DEFAULT_TOL,
) -> EditFidelity:
    """Edit fidelity with its parts (see the module docstring for the formula).

    ``source``/``target`` are trusted uint8 (H, W, 3) arrays of one shape (``ValueError``
    otherwise); ``output`` is model output and never raises. To score many outputs
    against one problem, build an :class:`EditReference` once and call its ``score``.
    """
    return EditReference.build(source, target, region_mask, tol).score(output)


def edit_fidelity(
    output: Any,
    source: np.ndarray,
    target: np.ndarray,
    region_mask: np.ndarray | None = None,
    tol: int = DEFAULT_TOL,
) -> float:
    """Exact edit fidelity in [0, 1]: region agreement with target times preservation of source."""
    return edit_fidelity_details(output, source, target, region_mask, tol).score
