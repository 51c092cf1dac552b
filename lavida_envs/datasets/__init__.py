"""Loaders of real benchmarks from local files (no network) -> lists of ``Problem``.

Visual math: ``load_math_dataset(name, data_dir, split, image_size)`` with ``name`` in
:data:`MATH_LOADERS` (``geometry3k``, ``mathvista``, ``mathverse``). Every problem has

* ``prompt`` -- the question (transliterated into ``CHARSET``, see
  :mod:`lavida_envs.datasets.common`), ``A. ...`` option lines for multiple choice, an
  answer-format hint, and the ``<think>…</think><answer>…</answer>`` instruction;
* ``image`` -- ``uint8 (image_size, image_size, 3)``, aspect kept, white letterbox;
* ``answer`` -- the gold as text; the option LETTER for multiple choice;
* ``solution`` -- ``<think>rationale</think><answer>gold</answer>`` (the dataset's
  rationale when it has one, else "Read the figure and compute.");
* ``difficulty`` (1..5, per-dataset mapping documented in each loader), ``key``
  (``<dataset>:<id>``), ``source`` (e.g. ``mathvista:testmini``);
* ``meta`` -- what the scorer (``lavida_envs.rewards.math.check_answer``) reads:
  ``choices`` (option texts in order; ``[]`` for a multiple-choice question whose
  options are only in the figure; ``None`` for free form) and ``answer_type``
  (``choice`` / ``text`` / ``math``); plus ``question_type`` (``multi_choice`` /
  ``free_form``), ``dataset_answer_type`` (the benchmark's own: MathVista ``integer`` /
  ``float`` / ``text`` / ``list``, MathVerse free form ``expression``), ``precision``,
  ``original_id``, ``image_path``, ``untransliterated_chars`` and loader extras.

MathVista and MathVerse are evaluation sets: ``split="train"`` gives ``[]``. Bad files
raise :class:`DatasetError` (a ``ValueError``) naming the file, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lavida_envs.base import Problem
from lavida_envs.datasets.common import DatasetError, Letterbox, letterbox, to_charset, transliterate
from lavida_envs.datasets.geometry3k import load_geometry3k
from lavida_envs.datasets.mathverse import load_mathverse
from lavida_envs.datasets.mathvista import load_mathvista

__all__ = [
    "MATH_LOADERS",
    "DatasetError",
    "Letterbox",
    "letterbox",
    "load_math_dataset",
    "to_charset",
    "transliterate",
]

#: Visual-math benchmark name -> loader ``(data_dir, split, image_size) -> list[Problem]``.
MATH_LOADERS: dict[str, Callable[[Path, str, int], list[Problem]]] = {
    "geometry3k": load_geometry3k,
    "mathvista": load_mathvista,
    "mathverse": load_mathverse,
}


def load_math_dataset(name: str, data_dir: str | None, split: str, image_size: int) -> list[Problem]:
    """Problems of visual-math benchmark ``name`` read from ``data_dir`` for ``split``."""
    key = str(name).strip().lower()
    if key not in MATH_LOADERS:
        raise ValueError(f"unknown math dataset {name!r}; known: {sorted(MATH_LOADERS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if data_dir is None:
        raise ValueError(
            f"dataset {key!r} is read from local files: pass data_dir=<folder with the unpacked "
            f"{key} release> (e.g. gym.make(..., dataset={key!r}, data_dir='/data/{key}'))"
        )
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DatasetError(path, None, "data_dir does not exist", f"pass data_dir=<folder holding the {key} files>")
    return MATH_LOADERS[key](path, split, image_size)
