"""MagicBrush-style edit triplets (source image, instruction, target image) from local files.

Layout (the MagicBrush release; nothing is downloaded)::

    DATA_DIR/<split>/edit_sessions.json       {"<img_id>": [turn, ...], ...}
    DATA_DIR/<split>/images/<img_id>/<file>   the files the turns name

where each turn is ``{"input": "<id>-input.png", "mask": "<id>-mask1.png",
"output": "<id>-output1.png", "instruction": "..."}`` (``mask`` optional). Split folders:
``train`` for ``split="train"``; ``test``, else ``dev``, for ``split="test"``. A flat
folder (``DATA_DIR/edit_sessions.json`` with ``DATA_DIR/images/...``, or the JSON file
itself) is divided between the splits by a hash of the image id, so all turns of a
session land in one split.

Every turn becomes a :class:`~lavida_envs.base.Problem` whose ``image`` is the source,
letterboxed to ``image_size`` (aspect kept, white padding), with the edited target and
the region mask in ``meta["target_image"]`` / ``meta["region_mask"]`` (same letterbox).
The region comes from the released mask when there is one:

* a mask with transparency (RGBA/LA): the transparent pixels (alpha < 128), DALL-E 2's
  "edit here" convention that MagicBrush's annotators used;
* a black-and-white mask (99% of pixels within 8 of black or white): the white pixels;
* otherwise (no mask, or a mask that is neither): the pixels where target and source
  differ by more than ``lavida_envs.rewards.edit.DEFAULT_TOL`` in some channel
  (``meta["region_from"]`` records which rule was used).

A released mask is letterboxed like the images and then dilated by ``ceil(2 * scale)``
pixels (at least 2): bicubic resizing spreads an edit by the kernel's reach of 2 source
pixels, and that spill must not count against preservation.

``difficulty`` is the turn number (1, 2, 3, ...; capped at 5): later turns edit an
already-edited image. Malformed files raise :class:`~lavida_envs.datasets.common.DatasetError`
naming the file, the record and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from lavida_envs.base import Problem, split_of_key
from lavida_envs.datasets.common import DatasetError, Letterbox, get_field, letterbox, read_json, to_charset
from lavida_envs.rewards.edit import DEFAULT_TOL
from lavida_envs.tasks.edit_ops import edit_prompt, edit_solution

__all__ = ["SESSIONS_FILE", "load_magicbrush", "read_mask"]

SESSIONS_FILE = "edit_sessions.json"
_SPLIT_DIRS = {"train": ("train",), "test": ("test", "dev")}


def _locate(data_dir: str | Path, split: str) -> tuple[Path, bool]:
    """``(edit_sessions.json path, is_flat)`` for ``split`` under ``data_dir``."""
    root = Path(data_dir)
    if root.is_file():
        return root, True
    for name in _SPLIT_DIRS[split]:
        if (root / name / SESSIONS_FILE).is_file():
            return root / name / SESSIONS_FILE, False
    if (root / SESSIONS_FILE).is_file():
        return root / SESSIONS_FILE, True
    tried = [str(root / n / SESSIONS_FILE) for n in _SPLIT_DIRS[split]] + [str(root / SESSIONS_FILE)]
    raise DatasetError(
        root, None, f"no MagicBrush {SESSIONS_FILE} for split {split!r} (tried {', '.join(tried)})",
        "point data_dir at the unpacked MagicBrush folder (with train/ and test/ or dev/ inside)",
    )


def read_mask(path: Path, label: str) -> tuple[np.ndarray | None, str]:
    """The edit region of a mask file as bool (H, W) and the rule used, or ``(None, 'diff')``."""
    try:
        with Image.open(path) as raw:
            raw.load()
            img = raw.convert("RGBA") if (raw.mode in ("RGBA", "LA", "PA", "P") or "transparency" in raw.info) else raw
            if img.mode == "RGBA":
                alpha = np.asarray(img.getchannel("A"))
                if alpha.min() < 128:
                    return alpha < 128, "alpha"
            grey = np.asarray(img.convert("L"))
    except Exception as exc:
        raise DatasetError(path, "mask", f"cannot decode image: {type(exc).__name__}: {exc}",
                           "replace the mask with a valid PNG", label) from None
    extreme = (grey <= 8) | (grey >= 247)
    if extreme.mean() >= 0.99:
        return grey >= 128, "binary"
    return None, "diff"


def _letterbox_mask(mask: np.ndarray, box: Letterbox, image_size: int) -> np.ndarray:
    """Apply an image's letterbox transform to its (original-resolution) mask."""
    w, h = box.orig_size
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.NEAREST)
    nw, nh = max(1, min(image_size, round(w * box.scale))), max(1, min(image_size, round(h * box.scale)))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.NEAREST)
    out = np.zeros((image_size, image_size), dtype=bool)
    x, y = int(box.pad_x), int(box.pad_y)
    out[y : y + nh, x : x + nw] = np.asarray(img) >= 128
    # bicubic resizing of the images spreads an edit by the kernel's reach (2 source pixels)
    reach = int(math.ceil(2 * max(1.0, box.scale)))
    return ndimage.binary_dilation(out, structure=np.ones((3, 3), bool), iterations=reach) if out.any() else out


def _diff_region(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.abs(source.astype(np.int16) - target.astype(np.int16)).max(axis=2) > DEFAULT_TOL


def _turn_problem(
    sessions_path: Path, images_dir: Path, img_id: str, turn_no: int, turn: Any, image_size: int
) -> Problem:
    label = f"session {img_id} turn {turn_no}"
    if not isinstance(turn, dict):
        raise DatasetError(sessions_path, None, f"turn is {type(turn).__name__}, expected an object", record=label)
    instruction = get_field(turn, "instruction", str, sessions_path, label).strip()
    if not instruction:
        raise DatasetError(sessions_path, "instruction", "empty instruction", "give every turn its text", label)
    files: dict[str, Path] = {}
    for name in ("input", "output", "mask"):
        if name == "mask":
            rel = get_field(turn, name, str, sessions_path, label, default=None)
        else:
            rel = get_field(turn, name, str, sessions_path, label)
        if rel is None:
            continue
        path = images_dir / img_id / rel
        if not path.is_file():
            raise DatasetError(
                sessions_path, name, f"image {rel!r} not found at {path}",
                f"unpack the images under {images_dir}/<img_id>/", label,
            )
        files[name] = path
    source, box = letterbox(files["input"], image_size, field="input")
    target, _ = letterbox(files["output"], image_size, field="output")
    region, rule = (None, "diff")
    if "mask" in files:
        region, rule = read_mask(files["mask"], label)
        if region is not None:
            region = _letterbox_mask(region, box, image_size)
    if region is None:
        region, rule = _diff_region(source, target), "diff"
    text = to_charset(instruction)
    return Problem(
        prompt=edit_prompt(text),
        image=source,
        answer=text,
        solution=edit_solution([f"The instruction asks: {text}", "Apply it and keep everything else."], text),
        difficulty=min(5, turn_no),
        key=f"magicbrush:{img_id}:{turn_no}",
        source="magicbrush",
        meta={
            "target_image": target,
            "region_mask": region,
            "region_from": rule,
            "instruction": text,
            "img_id": img_id,
            "turn": turn_no,
            "files": {k: str(v) for k, v in files.items()},
        },
    )


def load_magicbrush(data_dir: str | Path, split: str, image_size: int = 128) -> list[Problem]:
    """Every turn of the MagicBrush sessions of ``split`` as a Problem (ordered by image id, turn)."""
    if split not in _SPLIT_DIRS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    sessions_path, flat = _locate(data_dir, split)
    data = read_json(sessions_path)
    if not isinstance(data, dict):
        raise DatasetError(
            sessions_path, None, f"top level is {type(data).__name__}",
            "expected an object mapping image id -> list of turns",
        )
    images_dir = sessions_path.parent / "images"
    problems: list[Problem] = []
    for img_id in sorted(data, key=str):
        turns = data[img_id]
        if not isinstance(turns, list):
            raise DatasetError(sessions_path, None, f"turns are {type(turns).__name__}, expected a list",
                               "map each image id to a list of turns", f"session {img_id}")
        if flat and split_of_key(f"magicbrush|{img_id}") != split:
            continue
        for turn_no, turn in enumerate(turns, 1):
            problems.append(_turn_problem(sessions_path, images_dir, str(img_id), turn_no, turn, image_size))
    return problems
