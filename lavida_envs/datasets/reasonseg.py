"""ReasonSeg (LISA) from local files for Grounding-v0: per-image labelme JSON + image.

Layout, under ``data_dir`` (or ``data_dir/reasonseg``)::

    train/<stem>.json  train/<stem>.jpg      (also val/, test/)

Each JSON holds ``text`` (a query string or a list of them), optionally ``is_sentence``,
and labelme-style ``shapes``: ``[{"label": ..., "points": [[x, y], ...], ...}]``. As in
LISA, shapes labelled ``flag`` are skipped and labels containing ``ignore`` are not part
of the target; the gold box is the bounds of the points of every other shape (in the
original image's pixels), mapped into the letterboxed observation. One problem per query
text. Splits: env ``train`` -> ``train/``, env ``test`` -> ``val/``; pass
``dataset="reasonseg:test"`` for the test folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lavida_envs.datasets.common import DatasetError, read_json, to_charset
from lavida_envs.datasets.refcoco import GroundingSample

__all__ = ["load_reasonseg", "polygon_box"]

_DEFAULT_SUB = {"train": "train", "test": "val"}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_MAX_EXPRESSION = 1500


def polygon_box(shapes: Any, path: Path) -> tuple[float, float, float, float]:
    """Bounds ``(x1, y1, x2, y2)`` of every target polygon point (see the module doc)."""
    if not isinstance(shapes, list):
        raise DatasetError(path, "shapes", f"expected a list, got {type(shapes).__name__}",
                           "use labelme-style shapes: [{label, points}]")
    xs: list[float] = []
    ys: list[float] = []
    for n, shape in enumerate(shapes):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise DatasetError(path, "shapes", f"shape {n} has no string 'label'", "each shape needs label and points")
        label = shape["label"].lower()
        if label == "flag" or "ignore" in label:
            continue
        points = shape.get("points")
        ok = isinstance(points, list) and points and all(
            isinstance(p, (list, tuple)) and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in points
        )
        if not ok:
            raise DatasetError(path, "points", f"shape {n} points must be a non-empty list of [x, y] numbers",
                               "fix the polygon", f"shape {n}")
        xs.extend(float(p[0]) for p in points)
        ys.extend(float(p[1]) for p in points)
    if not xs:
        raise DatasetError(path, "shapes", "no target shape (all are 'flag' or 'ignore')", "add a target polygon")
    box = (min(xs), min(ys), max(xs), max(ys))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DatasetError(path, "points", f"target polygon has zero area (bounds {box})", "fix the polygon")
    return box


def _folder(data_dir: Path, sub: str) -> Path:
    for cand in (data_dir / sub, data_dir / "reasonseg" / sub, data_dir / "ReasonSeg" / sub):
        if cand.is_dir():
            return cand
    raise DatasetError(data_dir / sub, None, "split folder not found",
                       f"point data_dir at the ReasonSeg folder holding {sub}/*.json")


def load_reasonseg(data_dir: str | Path, split: str, subsplit: str | None = None) -> list[GroundingSample]:
    """One sample per query text of every JSON in the split folder (sorted by file name)."""
    sub = subsplit or _DEFAULT_SUB[split]
    folder = _folder(Path(data_dir), sub)
    out: list[GroundingSample] = []
    for path in sorted(folder.glob("*.json")):
        record = read_json(path)
        if not isinstance(record, dict):
            raise DatasetError(path, None, f"top level is {type(record).__name__}", "expected a JSON object")
        texts = record.get("text")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise DatasetError(path, "text", f"expected a non-empty string or list of strings, got {texts!r:.60}",
                               "give the query text(s) under 'text'")
        box = polygon_box(record.get("shapes"), path)
        image = next((path.with_suffix(ext) for ext in _IMAGE_EXTS if path.with_suffix(ext).is_file()), None)
        if image is None:
            raise DatasetError(path, "image", f"no {path.stem}.jpg/.png next to the JSON",
                               "put the image beside its JSON with the same name")
        for j, text in enumerate(texts):
            expression = to_charset(" ".join(text.split()))[:_MAX_EXPRESSION]
            out.append(GroundingSample(
                dataset="reasonseg", sample_id=f"{sub}/{path.stem}:{j}", expression=expression,
                image_path=image, box=box, difficulty=5,
                meta={"category": "target", "is_sentence": bool(record.get("is_sentence", False)),
                      "subsplit": sub},
            ))
    if not out:
        raise DatasetError(folder, None, "no *.json files", "unpack ReasonSeg so that each split folder holds JSON+jpg")
    return out
