"""Geometry3K (Inter-GPS release) from local files -> :class:`lavida_envs.base.Problem`.

Layout (as unzipped from the release's ``train.zip``/``val.zip``/``test.zip``)::

    <data_dir>/{train,val,test}/<id>/data.json      # problem_text, choices, answer, id, ...
    <data_dir>/{train,val,test}/<id>/img_diagram.png

``split="test"`` reads ``test/``; ``split="train"`` reads ``train/`` plus ``val/`` when
present (the env has no validation split; 2,101 + 300 problems). Every problem is
4-way multiple choice: the prompt lists ``choices`` as ``A. ...`` lines, the gold is
the letter in ``answer`` and ``meta["choices"]`` holds the option texts. The
reference solution uses ``detailed_solution`` when it is non-blank. Geometry3K has no
difficulty annotation, so every problem gets difficulty 3. Keys are
``geometry3k:<id>``; sources ``geometry3k:<folder>``.
"""

from __future__ import annotations

from pathlib import Path

from lavida_envs.base import Problem
from lavida_envs.datasets.common import (
    MC_HINT,
    DatasetError,
    get_field,
    letter_index,
    letterbox,
    make_problem,
    read_json,
)

__all__ = ["load_geometry3k"]

#: Release folders read for each env split.
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {"train": ("train", "val"), "test": ("test",)}


def _problem_dirs(folder: Path) -> list[Path]:
    dirs = [d for d in folder.iterdir() if d.is_dir()]
    return sorted(dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def _load_one(problem_dir: Path, folder: str, image_size: int) -> Problem:
    path = problem_dir / "data.json"
    record = read_json(path)
    if not isinstance(record, dict):
        raise DatasetError(path, None, f"top level is {type(record).__name__}", "expected one JSON object")
    label = problem_dir.name
    pid = str(get_field(record, "id", (int, str), path, label, default=problem_dir.name))
    text = get_field(record, "problem_text", str, path, label)
    choices = get_field(record, "choices", list, path, label)
    if len(choices) < 2 or not all(isinstance(c, (str, int, float)) for c in choices):
        raise DatasetError(path, "choices", f"expected a list of >= 2 option strings, got {choices!r}"[:160],
                           "list the options in order", label)
    answer = get_field(record, "answer", str, path, label)
    index = letter_index(answer)
    if not 0 <= index < len(choices):
        raise DatasetError(path, "answer", f"{answer!r} is not a letter among A..{chr(64 + len(choices))}",
                           "the answer must be the letter of the correct choice", label)
    image_path = problem_dir / "img_diagram.png"
    image, _ = letterbox(image_path, image_size, field="img_diagram.png")
    return make_problem(
        dataset="geometry3k",
        pid=pid,
        source=f"geometry3k:{folder}",
        question=text,
        image=image,
        image_path=image_path,
        gold=answer.strip().strip("()").strip(),
        multiple_choice=True,
        choices=[str(c) for c in choices],
        hint=MC_HINT,
        rationale=get_field(record, "detailed_solution", str, path, label, default=""),
        difficulty=3,
        meta={
            "problem_type_graph": record.get("problem_type_graph"),
            "problem_type_goal": record.get("problem_type_goal"),
        },
    )


def load_geometry3k(data_dir: Path, split: str, image_size: int) -> list[Problem]:
    """All Geometry3K problems of ``split`` under ``data_dir``, in folder/id order."""
    problems: list[Problem] = []
    for i, folder in enumerate(SPLIT_FOLDERS[split]):
        root = Path(data_dir) / folder
        if not root.is_dir():
            if i == 0:  # the main folder of the split must exist; val/ is optional
                raise DatasetError(root, None, "folder not found",
                                   f"unzip Geometry3K's {folder}.zip so that {folder}/<id>/data.json exists")
            continue
        problems.extend(_load_one(d, folder, image_size) for d in _problem_dirs(root))
    return problems
