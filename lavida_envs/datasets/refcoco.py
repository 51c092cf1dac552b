"""RefCOCO / RefCOCO+ / RefCOCOg from local files (the `refer` toolkit layout) for Grounding-v0.

Layout, under ``data_dir`` (or ``data_dir`` is the dataset folder itself)::

    refcoco/instances.json      COCO annotations (loaded into pycocotools.coco.COCO)
    refcoco/refs(unc).p         refs: list of {ref_id, ann_id, image_id, split, sentences:
                                [{sent, ...}], category_id}; refcoco+ uses refs(unc).p,
                                refcocog refs(umd).p (else refs(google).p)
    COCO_train2014_*.jpg        images, looked up in data_dir, data_dir/<name>, .../images,
                                data_dir/train2014, data_dir/images/train2014 and
                                data_dir/images/mscoco/images/train2014

One problem per (ref, sentence). Gold = the annotation's COCO ``bbox`` (xywh) as xyxy,
mapped into the letterboxed ``S x S`` observation and rounded to integer pixels.
Splits: env ``train`` -> refs split ``train``, env ``test`` -> ``val``; pass
``dataset="refcoco:testA"`` (or ``testB``, ``test``) for another.

Pickles: the official refs files are pickles, and unpickling can run code. They are read
only from the ``data_dir`` the user passes, and with an unpickler that refuses *every*
global (class or function reference): a refs file holds only lists, dicts, strings and
numbers, so a file that names anything else is rejected with :class:`DatasetError`.
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lavida_envs.datasets.common import DatasetError, read_json, resolve_image, to_charset

__all__ = [
    "GroundingSample",
    "REFCOCO_NAMES",
    "load_refcoco",
    "read_refs_pickle",
]

#: Loader names and their refs files, in order of preference.
REFCOCO_NAMES: dict[str, tuple[str, ...]] = {
    "refcoco": ("refs(unc).p",),
    "refcoco+": ("refs(unc).p",),
    "refcocog": ("refs(umd).p", "refs(google).p"),
}
_DIFFICULTY = {"refcoco": 2, "refcoco+": 2, "refcocog": 3}
_DEFAULT_SUB = {"train": "train", "test": "val"}


@dataclass(frozen=True)
class GroundingSample:
    """One real grounding item before its image is loaded: box in original image pixels."""

    dataset: str
    sample_id: str
    expression: str
    image_path: Path
    box: tuple[float, float, float, float]  # xyxy, original pixels
    difficulty: int
    meta: dict[str, Any] = field(default_factory=dict)


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refers to global {module}.{name}")


def read_refs_pickle(path: str | Path) -> list[dict[str, Any]]:
    """The refs list of a ``refs(*).p`` file, unpickled with every global refused (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, None, "refs file not found", "download the refer toolkit's refs files")
    for encoding in ("ASCII", "latin1"):  # Python 2 pickles may carry byte strings
        try:
            with path.open("rb") as fh:
                refs = _NoGlobals(fh, encoding=encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except Exception as exc:  # malformed or hostile pickle
            raise DatasetError(
                path, None, f"cannot read refs pickle: {type(exc).__name__}: {exc}",
                "a refs file must hold only lists, dicts, strings and numbers",
            ) from None
    else:
        raise DatasetError(path, None, "undecodable strings in refs pickle", "re-download the file")
    if not isinstance(refs, list):
        raise DatasetError(path, None, f"top level is {type(refs).__name__}", "expected a list of ref dicts")
    return refs


def _dataset_dir(name: str, data_dir: Path) -> Path:
    for cand in (data_dir / name, data_dir):
        if (cand / "instances.json").is_file():
            return cand
    raise DatasetError(
        data_dir / name / "instances.json", None, "file not found",
        f"point data_dir at a folder holding {name}/instances.json (or at {name}/ itself)",
    )


def _load_coco(path: Path) -> Any:
    from pycocotools.coco import COCO

    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, None, f"top level is {type(data).__name__}", "expected a COCO dict")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DatasetError(path, key, "missing or not a list", "use the refer toolkit's instances.json")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as exc:
            raise DatasetError(path, str(exc).strip("'"), f"malformed COCO record: {exc!r}",
                               "every image needs 'id'/'file_name', every annotation 'id'/'image_id'/'bbox'") from None
    return coco


def _ref_field(ref: Any, name: str, types: Any, path: Path, label: str) -> Any:
    if not isinstance(ref, dict):
        raise DatasetError(path, None, f"ref is {type(ref).__name__}, expected a dict", record=label)
    value = ref.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, types):
        raise DatasetError(path, name, f"missing or of type {type(value).__name__}",
                           "each ref needs ref_id, ann_id, image_id, split and sentences", label)
    return value


def _xyxy(bbox: Any, path: Path, label: str) -> tuple[float, float, float, float]:
    """The COCO ``[x, y, w, h]`` as finite xyxy; anything else (NaN, Infinity, w or h <= 0) is an error."""
    ok = isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
    )
    if ok:
        x, y, w, h = (float(v) for v in bbox)
        ok = w > 0 and h > 0 and math.isfinite(x + w) and math.isfinite(y + h)
    if not ok:
        raise DatasetError(path, "bbox", f"expected finite [x, y, w, h] with w, h > 0, got {str(bbox)[:120]}",
                           "fix the annotation's bbox", label)
    return (x, y, x + w, y + h)


def load_refcoco(name: str, data_dir: str | Path, split: str, subsplit: str | None = None) -> list[GroundingSample]:
    """Every (ref, sentence) of refs split ``subsplit`` (default: train->train, test->val)."""
    if name not in REFCOCO_NAMES:
        raise ValueError(f"unknown RefCOCO variant {name!r}; known: {sorted(REFCOCO_NAMES)}")
    root = Path(data_dir)
    ddir = _dataset_dir(name, root)
    refs_path = next((ddir / f for f in REFCOCO_NAMES[name] if (ddir / f).is_file()), ddir / REFCOCO_NAMES[name][0])
    refs = read_refs_pickle(refs_path)
    inst_path = ddir / "instances.json"
    coco = _load_coco(inst_path)
    want = subsplit or _DEFAULT_SUB[split]
    roots = [ddir, root, root / "train2014", root / "images" / "train2014",
             root / "images" / "mscoco" / "images" / "train2014"]
    images: dict[Any, Path] = {}
    out: list[GroundingSample] = []
    for n, ref in enumerate(refs):
        label = f"ref {n}"
        if _ref_field(ref, "split", str, refs_path, label) != want:
            continue
        ref_id = _ref_field(ref, "ref_id", int, refs_path, label)
        ann_id = _ref_field(ref, "ann_id", int, refs_path, label)
        image_id = _ref_field(ref, "image_id", int, refs_path, label)
        sentences = _ref_field(ref, "sentences", list, refs_path, label)
        ann = coco.anns.get(ann_id)
        if ann is None:
            raise DatasetError(refs_path, "ann_id", f"annotation {ann_id} is not in {inst_path}",
                               "use the instances.json that ships with these refs", label)
        box = _xyxy(ann.get("bbox"), inst_path, f"annotation {ann_id}")
        if image_id not in images:
            img = coco.imgs.get(image_id)
            if img is None or not isinstance(img.get("file_name"), str):
                raise DatasetError(inst_path, "file_name", f"image {image_id} missing or without file_name",
                                   "use the instances.json that ships with these refs", f"image {image_id}")
            images[image_id] = resolve_image(img["file_name"], roots, inst_path, f"image {image_id}")
        cat = coco.cats.get(ref.get("category_id", ann.get("category_id")), {}).get("name", "object")
        for j, sent in enumerate(sentences):
            text = sent.get("sent", sent.get("raw")) if isinstance(sent, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(refs_path, "sentences", f"sentence {j} has no 'sent' text",
                                   "each sentence must be a dict with a 'sent' string", label)
            out.append(GroundingSample(
                dataset=name, sample_id=f"{ref_id}:{j}", expression=to_charset(text).strip(),
                image_path=images[image_id], box=box, difficulty=_DIFFICULTY[name],
                meta={"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category": cat,
                      "refs_split": want},
            ))
    return out
