"""MathVerse testmini from local files -> :class:`lavida_envs.base.Problem`.

Files: ``<data_dir>/testmini.json`` (the release's list of records) or a
``testmini.jsonl`` export; ``data_dir`` may also be the file itself. ``image`` paths are
relative to the JSON file's folder, or to its ``images/`` folder (where the release's
``images.zip`` unpacks). Records without an image (the separate text-only file) are
rejected: this is a visual task.

Fields used: ``sample_index`` (key), ``problem_index``, ``problem_version``,
``question``, ``image``, ``answer``, ``question_type`` (multi-choice / free-form),
``metadata``; ``query_wo``/``query_cot``/``question_for_eval`` are kept in ``meta`` but
never shown (``question_for_eval`` holds text a Vision-Only version hides in the image).
MathVerse is evaluation-only: ``split="test"`` returns testmini, ``"train"`` ``[]``.

Multiple choice: MathVerse embeds the options in the question text (``Choices:`` then
``A:40°`` / ``A.5 cm`` / ``(A) ...`` lines). :func:`split_options` cuts such a trailing
block out of the question; the prompt then lists the options as ``A. ...`` lines and
``meta["choices"]`` holds their texts. When no block can be parsed (Vision-Only
versions draw the options in the figure) the question is shown as is and
``meta["choices"]`` is ``[]``; the gold is the letter either way (an answer given as
an option's text is mapped to its letter). Free-form golds are kept as text and
graded by math-verify (``answer_type="math"``, ``dataset_answer_type="expression"``).

Difficulty follows how much must be read from the figure (``problem_version``):
Text Dominant / Text Only 1, Text Lite 2, Vision Intensive 3, Vision Dominant 4,
Vision Only 5; unknown versions 3. Keys are ``mathverse:<sample_index>``.
"""

from __future__ import annotations

import re
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

__all__ = ["load_mathverse", "split_options"]

FILES = ("testmini.json", "testmini.jsonl")
VERSION_DIFFICULTY = {
    "text dominant": 1, "text only": 1, "text lite": 2,
    "vision intensive": 3, "vision dominant": 4, "vision only": 5,
}
QUESTION_TYPES = {"multi-choice": "multi_choice", "free-form": "free_form"}
FREE_FORM_HINT = "Give the final answer as a number or an expression."
_HEADER = re.compile(r"^\s*(choices?|options?)\s*[:：]?\s*$", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?([A-H])\s*[).:：．]\s*(.*?)\s*$")


def split_options(text: str) -> tuple[str, list[str]]:
    """Cut a trailing ``A:..``/``B:..`` option block (after an optional ``Choices:``) out of ``text``."""
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    start = len(lines)
    while start > 0 and _OPTION.match(lines[start - 1]):
        start -= 1
    found = [_OPTION.match(line) for line in lines[start:]]
    letters = [m.group(1) for m in found]
    if len(found) < 2 or letters != [chr(65 + i) for i in range(len(found))]:
        return text, []
    body_end = start - 1 if start > 0 and _HEADER.match(lines[start - 1]) else start
    return "\n".join(lines[:body_end]).rstrip(), [m.group(2) for m in found]


def _load_one(record: dict, label: str, path: Path, image_size: int) -> Problem:
    pid = str(get_field(record, "sample_index", (str, int), path, label))
    label = f"sample_index {pid}"
    question = get_field(record, "question", str, path, label)
    raw_type = get_field(record, "question_type", str, path, label)
    if raw_type not in QUESTION_TYPES:
        raise DatasetError(path, "question_type", f"{raw_type!r} is not one of {list(QUESTION_TYPES)}",
                           f"use one of {list(QUESTION_TYPES)}", label)
    qtype = QUESTION_TYPES[raw_type]
    version = get_field(record, "problem_version", str, path, label)
    answer = gold_text(str(get_field(record, "answer", (str, int, float), path, label)), path, label)
    metadata = get_field(record, "metadata", dict, path, label, default={})
    rel = get_field(record, "image", str, path, label)
    if not rel.strip():
        raise DatasetError(path, "image", "empty image path (a text-only record)",
                           "use MathVerse's testmini.json, which has a figure for every record", label)
    image_path = resolve_image(rel, [path.parent], path, label)
    image, _ = letterbox(image_path, image_size)
    body, choices = split_options(question) if qtype == "multi_choice" else (question, [])
    if qtype == "multi_choice":
        gold, hint = gold_letter(answer, choices, path, label, prefer_letter=True), MC_HINT
    else:
        gold, hint = answer, FREE_FORM_HINT
    extra = {k: record[k] for k in ("query_wo", "query_cot", "question_for_eval") if isinstance(record.get(k), str)}
    return make_problem(
        dataset="mathverse",
        pid=pid,
        source=f"mathverse:{metadata.get('split') or 'testmini'}",
        question=body.strip() or "Answer the question shown in the figure.",
        image=image,
        image_path=image_path,
        gold=gold,
        multiple_choice=qtype == "multi_choice",
        choices=choices,
        hint=hint,
        difficulty=VERSION_DIFFICULTY.get(version.strip().lower(), 3),
        dataset_answer_type="text" if qtype == "multi_choice" else "expression",
        meta={
            "problem_version": version,
            "problem_index": record.get("problem_index"),
            "original_answer": answer,
            "metadata": metadata,
            **extra,
        },
    )


def load_mathverse(data_dir: Path, split: str, image_size: int) -> list[Problem]:
    """MathVerse testmini problems for ``split="test"``; ``[]`` for ``"train"``."""
    if split != "test":
        return []
    path = find_file(Path(data_dir), FILES, "download MathVerse's testmini.json and unzip images.zip into data_dir")
    return [_load_one(rec, label, path, image_size) for label, rec in read_records(path)]
