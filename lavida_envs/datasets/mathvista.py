"""MathVista testmini from local files -> :class:`lavida_envs.base.Problem`.

Files: ``<data_dir>/testmini.json`` or ``<data_dir>/data/testmini.json`` (the release's
dict keyed by pid), or a ``testmini.jsonl`` / JSON list export with the same fields;
``data_dir`` may also be the file itself. ``image`` paths (``images/1.jpg``) are
relative to the JSON file's folder (or ``data_dir``).

Fields used: ``pid``, ``question``, ``image``, ``choices`` (list or null), ``answer``,
``question_type`` (multi_choice / free_form), ``answer_type`` (integer / float / text /
list), ``precision``, ``unit``, ``metadata``. MathVista has only an evaluation split:
``split="test"`` returns testmini, ``split="train"`` returns ``[]``.

Prompts follow MathVista's own query builder: the question, `` (Unit: u)`` when there
is a unit, the options as ``A. ...`` lines, and an answer-type hint (integer; float
with ``precision`` decimals; list). Multiple-choice golds in MathVista are option
*texts*; here the gold is the matching *letter* and ``meta["choices"]`` keeps the texts.
Difficulty from ``metadata.grade``: daily life 1, elementary school 2, not applicable
or absent 3, high school 4, college 5. Keys are ``mathvista:<pid>``.
"""

from __future__ import annotations

import math
from pathlib import Path

from lavida_envs.base import Problem
from lavida_envs.datasets.common import (
    MC_HINT,
    DatasetError,
    find_file,
    get_field,
    gold_letter,
    gold_text,
    letterbox,
    make_problem,
    read_records,
    resolve_image,
)

__all__ = ["load_mathvista"]

FILES = ("testmini.json", "data/testmini.json", "testmini.jsonl", "data/testmini.jsonl")
GRADE_DIFFICULTY = {"daily life": 1, "elementary school": 2, "not applicable": 3, "high school": 4, "college": 5}
QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("integer", "float", "text", "list")
_NUM = (str, int, float)


def answer_hint(answer_type: str, precision: int | None) -> str:
    """The answer-format hint for a free-form MathVista question."""
    if answer_type == "integer":
        return "Answer with an integer, e.g., 1, 2, 3."
    if answer_type == "float":
        places = f"{precision} decimal place{'s' if precision != 1 else ''}" if precision else "decimals"
        return f"Answer with a floating-point number with {places}."
    if answer_type == "list":
        return "Answer with a list, e.g., [1, 2, 3]."
    return "Answer with a word or a short phrase."


#: Largest ``precision`` (decimal places) a record may ask for.
MAX_PRECISION = 20


def _plain_number(value: str | int | float, name: str, path: Path, label: str) -> str:
    """``value`` as text; a NaN or infinite JSON number (``NaN``, ``Infinity``, ``1e400``) is an error."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DatasetError(path, name, f"{value!r} is not a finite number (NaN, Infinity or out of range)",
                           f"write {name!r} as a finite number or a string", label)
    return str(value)


def _precision(value: int | float | None, path: Path, label: str) -> int | None:
    """``precision`` as decimal places 0..MAX_PRECISION (a whole float such as 2.0 is fine), or None."""
    if value is None:
        return None
    if not (math.isfinite(value) and float(value).is_integer() and 0 <= value <= MAX_PRECISION):
        raise DatasetError(path, "precision", f"{value!r} is not a whole number of decimal places 0..{MAX_PRECISION}",
                           "set 'precision' to an integer such as 1 or 2, or to null", label)
    return int(value)


def _choice(record: dict, name: str, allowed: tuple[str, ...], path: Path, label: str) -> str:
    value = get_field(record, name, str, path, label)
    if value not in allowed:
        raise DatasetError(path, name, f"{value!r} is not one of {list(allowed)}", f"use one of {list(allowed)}", label)
    return value


def _load_one(record: dict, label: str, path: Path, data_dir: Path, image_size: int) -> Problem:
    pid = str(get_field(record, "pid", (str, int), path, label))
    label = f"pid {pid}"
    question = get_field(record, "question", str, path, label)
    qtype = _choice(record, "question_type", QUESTION_TYPES, path, label)
    atype = _choice(record, "answer_type", ANSWER_TYPES, path, label)
    answer = gold_text(_plain_number(get_field(record, "answer", _NUM, path, label), "answer", path, label),
                       path, label)
    choices = [str(c) for c in get_field(record, "choices", list, path, label, default=[])]
    precision = _precision(get_field(record, "precision", (int, float), path, label, default=None), path, label)
    unit = get_field(record, "unit", str, path, label, default="")
    metadata = get_field(record, "metadata", dict, path, label, default={})
    rel = get_field(record, "image", str, path, label)
    image_path = resolve_image(rel, [path.parent, data_dir], path, label)
    image, _ = letterbox(image_path, image_size)
    if qtype == "multi_choice":
        if not choices:
            raise DatasetError(path, "choices", "multi_choice question without choices",
                               "give the options as a list or set question_type to free_form", label)
        gold, hint = gold_letter(answer, choices, path, label), MC_HINT
    else:
        gold, hint, choices = answer, answer_hint(atype, precision), []
    return make_problem(
        dataset="mathvista",
        pid=pid,
        source=f"mathvista:{metadata.get('split') or 'testmini'}",
        question=question + (f" (Unit: {unit})" if unit else ""),
        image=image,
        image_path=image_path,
        gold=gold,
        multiple_choice=qtype == "multi_choice",
        choices=choices,
        hint=hint,
        difficulty=GRADE_DIFFICULTY.get(str(metadata.get("grade", "")).lower(), 3),
        dataset_answer_type=atype,
        precision=precision,
        meta={"unit": unit or None, "original_answer": answer, "metadata": metadata},
    )


def load_mathvista(data_dir: Path, split: str, image_size: int) -> list[Problem]:
    """MathVista testmini problems for ``split="test"``; ``[]`` for ``"train"``."""
    if split != "test":
        return []
    path = find_file(Path(data_dir), FILES, "download MathVista's testmini.json (and images/) into data_dir")
    return [_load_one(rec, label, path, Path(data_dir), image_size) for label, rec in read_records(path)]
