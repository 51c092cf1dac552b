"""Box rewards for grounding: parse one box from model text, IoU (pycocotools), benchmark metrics.

Contract:

* :func:`parse_box_verbose` reads the answer region -- the last ``<answer>...</answer>``
  block, else the last ``\\boxed{...}``, else the whole text -- and finds every box written
  ``[x1, y1, x2, y2]`` or ``(x1, y1, x2, y2)``; the Qwen2.5-VL JSON form
  ``{"bbox_2d": [x1, y1, x2, y2]}`` (or a list of such objects) is covered because its
  list is such a box. Regex only: nothing is evaluated. Outcomes, never an exception:

  - exactly one box (identical repeats count once) -> that box;
  - no box -> ``None``, error "no box ...";
  - several different boxes -> ``None``, error "multiple boxes ..." (reward 0: hedging
    with several boxes can never beat one honest box);
  - a NaN/inf coordinate -> ``None``, error "non-finite coordinate";
  - reversed corners (``x2 < x1`` or ``y2 < y1``) -> ``None``, error "reversed corners"
    (we do not guess which corner was meant).
* :func:`box_iou` -- IoU of two ``xyxy`` boxes via ``pycocotools.mask.iou`` (which takes
  COCO ``[x, y, w, h]``; converted here); 0.0 for empty or non-finite boxes.
* :func:`score_box_text` -- the env scorer: parse, convert from the env's ``box_format``
  (``pixel`` | ``norm1000`` | ``norm1``) to pixels of the observed image, clip to the image,
  snap to the pixel grid (round to integers: gold boxes are integer pixels), then IoU with
  the gold. A box that is empty after clipping scores 0 with an error.
* :func:`iou_accuracy` -- the accuracy term of ``LaViDa/Grounding-v0``'s reward from an
  IoU. **Floored by default**: ``IoU if IoU >= floor else 0`` with ``floor =``
  :data:`DEFAULT_IOU_FLOOR` (0.1); ``floor=0`` gives the raw continuous IoU, and a
  ``threshold`` ``t`` gives ``1[IoU >= t]`` instead. Why a floor: without one a box
  covering the whole image always overlaps the target a little, so on the procedural
  scenes it averaged IoU 0.030 (at most 0.075) over 200 test problems against 0.027 for
  the random policy -- a constant, content-free answer that beat random guessing and that
  group-relative RL pushes a policy towards. With the 0.1 floor it earns only the format
  term, while coarse localisation still counts (a box 3x the target's side centred on it
  has IoU 0.11); the oracle still scores 1.0. Thresholded rewards such as ``1[IoU >= 0.5]``
  are the other common choice in grounding RL (``iou_threshold=``), but they give a small
  policy almost no signal (0 of 200 random boxes reach IoU 0.5).
* :func:`grounding_metrics` -- ``acc@0.5`` (the paper's P@0.5), ``acc@0.75``, ``giou``
  (mean per-sample IoU, = ``mean_iou``, a.k.a. mIoU) and ``ciou`` (sum of intersections /
  sum of unions); a ``None`` prediction counts IoU 0 (and its gold area enters the union).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from lavida_envs.rewards.format import find_boxed

__all__ = [
    "BOX_FORMATS",
    "DEFAULT_IOU_FLOOR",
    "box_iou",
    "format_box",
    "from_pixels",
    "grounding_metrics",
    "intersection_union",
    "iou_accuracy",
    "parse_box",
    "parse_box_verbose",
    "score_box_text",
    "to_pixels",
]

Box = tuple[float, float, float, float]
#: IoU below which the grounding accuracy term is 0 (see :func:`iou_accuracy`).
DEFAULT_IOU_FLOOR = 0.1
#: How a box's numbers are read: pixels of the observed image, 0..1000 or 0..1 of its side.
BOX_FORMATS: dict[str, float | None] = {"pixel": None, "norm1000": 1000.0, "norm1": 1.0}

_NUM = r"[-+]?(?:nan|inf(?:inity)?|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
_BOX = re.compile(
    rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]", re.IGNORECASE
)


def _answer_region(text: str) -> str:
    end = text.rfind("</answer>")
    if end != -1:
        start = text.rfind("<answer>", 0, end)
        if start != -1:
            return text[start + len("<answer>") : end]
    boxes = find_boxed(text) if "\\boxed" in text or "\\fbox" in text else []
    return boxes[-1] if boxes else text


def parse_box_verbose(text: str) -> tuple[Box | None, str | None]:
    """``(box, None)`` for exactly one valid box in the answer, else ``(None, reason)``."""
    if not isinstance(text, str):
        return None, f"expected text, got {type(text).__name__}"
    region = _answer_region(text)
    found: list[Box] = []
    for match in _BOX.finditer(region):
        box = tuple(float(v) for v in match.groups())
        if box not in found:
            found.append(box)  # type: ignore[arg-type]
    if not found:
        return None, "no box [x1, y1, x2, y2] found in the answer"
    if len(found) > 1:
        return None, f"multiple boxes ({len(found)}) in the answer; give exactly one box"
    box = found[0]
    if not all(math.isfinite(v) for v in box):
        return None, f"non-finite coordinate in box {list(box)}"
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        return None, f"reversed corners in box {list(box)}: need x1 <= x2 and y1 <= y2"
    return box, None


def parse_box(text: str) -> Box | None:
    """The single box ``(x1, y1, x2, y2)`` of a model answer, or None (see the module doc)."""
    return parse_box_verbose(text)[0]


def _valid(box: Sequence[float]) -> bool:
    return len(box) == 4 and all(math.isfinite(float(v)) for v in box) and box[2] > box[0] and box[3] > box[1]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``xyxy`` boxes (pycocotools ``mask.iou`` on their ``xywh`` forms)."""
    if not (_valid(a) and _valid(b)):
        return 0.0
    dt = np.array([[a[0], a[1], a[2] - a[0], a[3] - a[1]]], dtype=np.float64)
    gt = np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]]], dtype=np.float64)
    return float(mask_utils.iou(dt, gt, [0])[0, 0])


def intersection_union(a: Sequence[float] | None, b: Sequence[float]) -> tuple[float, float]:
    """Intersection and union areas of ``xyxy`` boxes (``a`` None or invalid: 0 and area(b))."""
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    if a is None or not _valid(a):
        return 0.0, area_b
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter, (a[2] - a[0]) * (a[3] - a[1]) + area_b - inter


def _scale(box_format: str) -> float | None:
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {list(BOX_FORMATS)}, got {box_format!r}")
    return BOX_FORMATS[box_format]


def to_pixels(box: Sequence[float], box_format: str, width: int, height: int) -> Box:
    """A box written in ``box_format`` as pixels of a ``width`` x ``height`` image."""
    unit = _scale(box_format)
    if unit is None:
        return tuple(float(v) for v in box)  # type: ignore[return-value]
    x1, y1, x2, y2 = (float(v) / unit for v in box)
    return (x1 * width, y1 * height, x2 * width, y2 * height)


def from_pixels(box: Sequence[float], box_format: str, width: int, height: int) -> Box:
    """A pixel box in ``box_format`` units."""
    unit = _scale(box_format)
    if unit is None:
        return tuple(float(v) for v in box)  # type: ignore[return-value]
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 / width * unit, y1 / height * unit, x2 / width * unit, y2 / height * unit)


def format_box(box: Sequence[float], box_format: str, width: int, height: int) -> str:
    """Text ``[x1, y1, x2, y2]`` of a pixel box in ``box_format`` (precise enough to round-trip)."""
    digits = {"pixel": 2, "norm1000": 2, "norm1": 5}[box_format if box_format in BOX_FORMATS else "pixel"]
    vals = from_pixels(box, box_format, width, height)
    parts = []
    for v in vals:
        r = round(v, digits)
        parts.append(str(int(r)) if r == int(r) else f"{r:.{digits}f}".rstrip("0"))
    return "[" + ", ".join(parts) + "]"


def score_box_text(
    text: str, gold: Sequence[float], width: int, height: int, box_format: str = "pixel"
) -> tuple[float, Box | None, str | None]:
    """``(iou, predicted pixel box or None, error or None)`` of a model answer against a pixel gold."""
    box, error = parse_box_verbose(text)
    if box is None:
        return 0.0, None, error
    x1, y1, x2, y2 = to_pixels(box, box_format, width, height)
    clipped = (
        float(round(min(max(x1, 0.0), width))), float(round(min(max(y1, 0.0), height))),
        float(round(min(max(x2, 0.0), width))), float(round(min(max(y2, 0.0), height))),
    )
    if not _valid(clipped):
        return 0.0, clipped, f"box {list(box)} ({box_format}) is empty after clipping to the {width}x{height} image"
    return box_iou(clipped, gold), clipped, None


def iou_accuracy(iou: float, floor: float = DEFAULT_IOU_FLOOR, threshold: float | None = None) -> float:
    """Accuracy term from an IoU: ``1[iou >= threshold]`` when given, else ``iou`` floored at ``floor``."""
    if not math.isfinite(iou):
        return 0.0
    if threshold is not None:
        return float(iou >= threshold)
    return float(iou) if iou >= floor else 0.0


def grounding_metrics(
    preds: Sequence[Sequence[float] | None], golds: Sequence[Sequence[float]]
) -> dict[str, float]:
    """``acc@0.5``, ``acc@0.75``, ``giou`` (= ``mean_iou``) and ``ciou`` over paired boxes."""
    if len(preds) != len(golds):
        raise ValueError(f"got {len(preds)} predictions for {len(golds)} gold boxes; they must pair up")
    if not golds:
        return {"acc@0.5": 0.0, "acc@0.75": 0.0, "giou": 0.0, "ciou": 0.0, "mean_iou": 0.0}
    ious = [0.0 if p is None else box_iou(p, g) for p, g in zip(preds, golds)]
    inter = union = 0.0
    for p, g in zip(preds, golds):
        i, u = intersection_union(p, g)
        inter, union = inter + i, union + u
    mean = sum(ious) / len(ious)
    return {
        "acc@0.5": sum(v >= 0.5 for v in ious) / len(ious),
        "acc@0.75": sum(v >= 0.75 for v in ious) / len(ious),
        "giou": mean,
        "ciou": inter / union if union > 0 else 0.0,
        "mean_iou": mean,
    }
