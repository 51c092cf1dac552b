"""Shared pieces of the real-benchmark loaders: errors, files, images, prompt text.

* :class:`DatasetError` -- every problem with a dataset file (missing, unreadable JSON,
  missing or mistyped field, missing image) names the file, the field and the fix.
* :func:`gold_text` -- a record's gold answer, stripped; an empty gold (no action could
  ever score) is a :class:`DatasetError` at load (:func:`make_problem` re-checks it).
* :func:`read_records` -- a JSON list, a JSON dict keyed by id (MathVista's
  ``testmini.json``) or JSON Lines, as ``(label, record)`` pairs.
* :func:`letterbox` -- any image file to a white-padded square ``uint8 (S, S, 3)`` array,
  with the :class:`Letterbox` transform (scale, padding) so loaders with boxes can map
  coordinates between the original and the observed image.
* :func:`transliterate` / :func:`to_charset` -- text into :data:`lavida_envs.base.CHARSET`.
  Per character: kept if in CHARSET; else a fixed table (Greek letters -> LaTeX words,
  ``±`` -> ``\\pm``, ``≅``/``≌`` -> ``\\cong``, ``∽`` -> ``\\sim``, ``⊙`` -> ``\\odot``,
  ``⌒`` -> ``arc``, super/subscript digits -> ``^2``/``_2``, CJK punctuation -> ASCII,
  curly quotes and dashes -> ASCII ...); else its NFKC form (full-width ``（＝）`` ->
  ``(=)``) or its accent-stripped NFKD form when those land in CHARSET; anything still
  outside (e.g. Chinese text) becomes :data:`UNKNOWN_MARK`, one per run of such
  characters. ``\\r\\n`` becomes ``\\n``.
* :func:`build_prompt` / :func:`build_solution` -- the prompt (question, ``A. ...``
  option lines, answer-format hint, the ``<think>…</think><answer>…</answer>``
  instruction), always within CHARSET and ``MAX_PROMPT_CHARS`` (an over-long question is
  cut at the end of the question text, marked ``...``), and the reference
  solution ``<think>rationale</think><answer>gold</answer>``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lavida_envs.base import CHARSET, MAX_PROMPT_CHARS, Problem

__all__ = [
    "ANSWER_INSTRUCTION", "DEFAULT_RATIONALE", "DatasetError", "Letterbox", "MC_HINT",
    "UNKNOWN_MARK", "build_prompt", "build_solution", "choice_letter", "find_file", "get_field",
    "gold_letter", "gold_text", "letter_index", "letterbox", "make_problem", "read_json", "read_records",
    "resolve_image", "to_charset", "transliterate",
]

#: The output format every prompt asks for (same as the procedural tasks).
ANSWER_INSTRUCTION = (
    "Think step by step inside <think></think>, then give the final answer inside "
    "<answer></answer>."
)
#: Answer-format hint of every multiple-choice prompt.
MC_HINT = "Answer with the letter of the correct option."
#: Reasoning text of a reference solution when the dataset has no rationale.
DEFAULT_RATIONALE = "Read the figure and compute."
#: What replaces a run of characters that cannot be written in CHARSET.
UNKNOWN_MARK = "[?]"
_CHARSET = frozenset(CHARSET)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WHITE = (255, 255, 255)


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file, field and fix."""

    def __init__(
        self, path: str | Path, field: str | None, problem: str, fix: str = "", record: str | None = None
    ) -> None:
        self.path = str(path)
        self.field = field
        where = f"{self.path}" + (f" [record {record}]" if record is not None else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{problem}" + (f"; {fix}" if fix else ""))


# ----- files ---------------------------------------------------------------------
def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing file or bad JSON raises :class:`DatasetError` with the line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, None, "file not found", "check data_dir and the dataset layout")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(
            path, None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            "re-download or repair the file",
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(path, None, f"cannot read file: {exc}", "it must be UTF-8 JSON") from None


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(path, None, f"cannot read file: {exc}", "it must be UTF-8 JSON Lines") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(
                path, None, f"invalid JSON on line {lineno} (column {exc.colno}): {exc.msg}",
                "each line must be one JSON object",
            ) from None
    return out


def read_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Records of a ``.jsonl`` file, a JSON list or a JSON dict keyed by id, as (label, dict)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, None, "file not found", "check data_dir and the dataset layout")
    if path.suffix == ".jsonl":
        pairs = _read_jsonl(path)
    else:
        data = read_json(path)
        if isinstance(data, dict):
            pairs = [(f"key {k}", v) for k, v in data.items()]
        elif isinstance(data, list):
            pairs = [(f"item {i}", v) for i, v in enumerate(data)]
        else:
            raise DatasetError(
                path, None, f"top level is {type(data).__name__}",
                "expected a list of records or a dict of records keyed by id",
            )
    for label, record in pairs:
        if not isinstance(record, dict):
            raise DatasetError(path, None, f"record is {type(record).__name__}, expected an object", record=label)
    return pairs


_MISSING = object()


def get_field(
    record: dict[str, Any], name: str, types: type | tuple[type, ...], path: str | Path,
    label: str, default: Any = _MISSING,
) -> Any:
    """``record[name]`` checked against ``types``; absent -> ``default`` or :class:`DatasetError`."""
    if name not in record or (record[name] is None and default is not _MISSING):
        if default is _MISSING:
            raise DatasetError(path, name, "missing required field", f"add {name!r} to the record", label)
        return default
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise DatasetError(
            path, name, f"expected {names}, got {type(value).__name__} {str(value)[:60]!r}",
            f"fix the value of {name!r}", label,
        )
    return value


def gold_text(answer: str, path: str | Path, label: str, name: str = "answer") -> str:
    """``answer`` stripped; an empty gold raises :class:`DatasetError` (no action could ever score)."""
    text = str(answer).strip()
    if not text or not _squeeze(to_charset(text)).strip():
        raise DatasetError(path, name, f"empty gold answer {answer!r}",
                           "give the record its answer (a record without one scores 0 for every action)", label)
    return text


def find_file(data_dir: Path, names: Sequence[str], fix: str) -> Path:
    """``data_dir`` itself when it is a file, else the first of ``data_dir / name`` that exists."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return data_dir
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise DatasetError(data_dir, None, f"none of {list(names)} found", fix)


# ----- images --------------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    """How an original image was fitted into the square: ``new = old * scale + pad``."""

    scale: float
    pad_x: float
    pad_y: float
    orig_size: tuple[int, int]  # (width, height)

    def box_to_image(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """Map an xyxy box in original pixels to pixels of the letterboxed image."""
        x1, y1, x2, y2 = (float(v) for v in box)
        s = self.scale
        return (x1 * s + self.pad_x, y1 * s + self.pad_y, x2 * s + self.pad_x, y2 * s + self.pad_y)

    def box_to_original(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """Map an xyxy box in letterboxed-image pixels back to original pixels."""
        x1, y1, x2, y2 = (float(v) for v in box)
        s = self.scale
        return ((x1 - self.pad_x) / s, (y1 - self.pad_y) / s, (x2 - self.pad_x) / s, (y2 - self.pad_y) / s)


def letterbox(path: str | Path, image_size: int, field: str = "image") -> tuple[np.ndarray, Letterbox]:
    """Load an image file as uint8 ``(S, S, 3)``: aspect kept, centred, white padding."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, field, "image file not found", "check the image path and data_dir")
    try:
        with Image.open(path) as raw:
            w, h = raw.size
            raw.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale >= target
            raw.load()
            img = raw
            if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, WHITE)
                img.paste(rgba, mask=rgba.getchannel("A"))
            img = img.convert("RGB")
    except Exception as exc:  # PIL raises many types for broken files
        raise DatasetError(path, field, f"cannot decode image: {type(exc).__name__}: {exc}",
                           "replace the file with a valid PNG/JPEG") from None
    scale = image_size / max(w, h)
    nw, nh = max(1, min(image_size, round(w * scale))), max(1, min(image_size, round(h * scale)))
    resized = img.resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != img.size else img
    pad_x, pad_y = (image_size - nw) // 2, (image_size - nh) // 2
    canvas = Image.new("RGB", (image_size, image_size), WHITE)
    canvas.paste(resized, (pad_x, pad_y))
    array = np.ascontiguousarray(np.asarray(canvas, dtype=np.uint8))
    return array, Letterbox(scale=scale, pad_x=float(pad_x), pad_y=float(pad_y), orig_size=(w, h))


def resolve_image(rel: str, roots: Sequence[Path], path: str | Path, label: str) -> Path:
    """The first existing ``root / rel`` (then ``root / 'images' / rel``); else DatasetError."""
    candidates = [Path(root) / sub / rel for root in roots for sub in ("", "images")]
    for cand in candidates:
        if cand.is_file():
            return cand
    tried = ", ".join(str(c) for c in candidates[:4])
    raise DatasetError(
        path, "image", f"image {rel!r} not found (tried {tried})",
        "unpack the dataset's images next to the JSON file (e.g. images/...)", label,
    )


# ----- text ----------------------------------------------------------------------
_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ζ": "zeta", "η": "eta",
    "θ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "mu", "ν": "nu", "ξ": "xi",
    "ρ": "rho", "σ": "sigma", "τ": "tau", "υ": "upsilon", "φ": "phi", "ϕ": "phi", "χ": "chi",
    "ψ": "psi", "ω": "omega", "Γ": "Gamma", "Δ": "Delta", "Θ": "Theta", "Λ": "Lambda",
    "Ξ": "Xi", "Π": "Pi", "Σ": "Sigma", "Φ": "Phi", "Ψ": "Psi", "Ω": "Omega",
}
_SYMBOLS = {
    "±": "\\pm ", "∓": "\\mp ", "≈": "\\approx ", "≅": "\\cong ", "≌": "\\cong ", "∽": "\\sim ",
    "∼": "\\sim ", "≡": "\\equiv ", "∝": "\\propto ", "⊙": "\\odot ", "∘": "\\circ ",
    "∈": "\\in ", "∉": "\\notin ", "⊂": "\\subset ", "⊆": "\\subseteq ", "∪": "\\cup ",
    "∩": "\\cap ", "∅": "\\emptyset ", "∀": "\\forall ", "∃": "\\exists ", "∑": "\\sum ",
    "∏": "\\prod ", "∫": "\\int ", "∂": "\\partial ", "∇": "\\nabla ", "∵": "because ",
    "∴": "therefore ", "→": "->", "←": "<-", "↔": "<->", "⇒": "=>", "⇔": "<=>", "⌒": "arc ",
    "∟": "right angle ", "▱": "parallelogram ", "□": "square ", "○": "circle ", "⊿": "right triangle ",
    "⋅": "·", "∙": "·", "•": "·", "≦": "≤", "≧": "≥", "‖": "∥", "∣": "|", "∶": ":",
    "–": "-", "—": "-", "―": "-", "‐": "-", "﹣": "-", "“": '"', "”": '"', "„": '"', "‘": "'",
    "’": "'", "′": "'", "″": "''", "、": ", ", "，": ", ", "。": ". ", "；": "; ", "：": ": ",
    "？": "? ", "！": "! ", "（": "(", "）": ")", "【": "[", "】": "]", "《": "<", "》": ">",
    "℃": "°C", "\u00a0": " ", "\u3000": " ", "\u200b": "",
}
_SUPER = {"⁰": "^0", "¹": "^1", "⁴": "^4", "⁵": "^5", "⁶": "^6", "⁷": "^7", "⁸": "^8", "⁹": "^9",
          "⁺": "^+", "⁻": "^-", "ⁿ": "^n"}
_SUB = {chr(0x2080 + i): f"_{i}" for i in range(10)}
_TABLE = {**{k: f"\\{v} " for k, v in _GREEK.items()}, **_SYMBOLS, **_SUPER, **_SUB}


def _char_to_charset(ch: str) -> str | None:
    if ch in _CHARSET:
        return ch
    if ch in _TABLE:
        return _TABLE[ch]
    for form in ("NFKC", "NFKD"):
        norm = "".join(c for c in unicodedata.normalize(form, ch) if not unicodedata.combining(c))
        if norm and all(c in _CHARSET for c in norm):
            return norm
    return None


def transliterate(text: str) -> tuple[str, int]:
    """``text`` rewritten inside CHARSET, and how many characters had no transliteration."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    unknown = 0
    for ch in text:
        rep = _char_to_charset(ch)
        if rep is None:
            unknown += 1
            if not out or out[-1] != UNKNOWN_MARK:
                out.append(UNKNOWN_MARK)
        else:
            out.append(rep)
    return "".join(out), unknown


def to_charset(text: str) -> str:
    """``text`` rewritten inside CHARSET (see the module docstring for the rules)."""
    return transliterate(text)[0]


def letter_index(letter: str) -> int:
    """0 for 'A', 1 for 'B', ...; -1 when ``letter`` is not a single capital letter."""
    letter = letter.strip().strip("()").strip()
    return _LETTERS.index(letter) if len(letter) == 1 and letter in _LETTERS else -1


def choice_letter(index: int) -> str:
    """'A' for 0, 'B' for 1, ..."""
    return _LETTERS[index]


def gold_letter(
    answer: str, choices: Sequence[str], path: str | Path, label: str, prefer_letter: bool = False
) -> str:
    """The letter of ``answer`` among ``choices``: matched as an option's text or read as a letter.

    ``prefer_letter`` decides which reading wins when both fit (MathVerse golds are
    letters, MathVista golds are option texts). With no ``choices`` any letter is kept.
    """
    norm = [str(c).strip() for c in choices]
    index = letter_index(answer)
    by_letter = index if 0 <= index < len(norm) or (index >= 0 and not norm) else -1
    if prefer_letter and by_letter >= 0:
        return choice_letter(by_letter)
    wanted = answer.strip()
    for keys, cand in ((norm, wanted), ([c.casefold() for c in norm], wanted.casefold())):
        if cand in keys:
            return choice_letter(keys.index(cand))
    if by_letter >= 0:
        return choice_letter(by_letter)
    raise DatasetError(
        path, "answer", f"{answer!r} is neither one of the choices {norm!r} nor a valid option letter"[:200],
        "make the answer equal to one choice's text or its letter", label,
    )


def build_prompt(question: str, choices: Sequence[str] = (), hint: str = "") -> str:
    """Question + ``A. ...`` option lines + hint + answer instruction, inside CHARSET and the cap."""
    question = _squeeze(to_charset(question)).strip()
    lines = [f"{choice_letter(i)}. {_squeeze(to_charset(c)).strip()}" for i, c in enumerate(choices)]
    tail = ("\nChoices:\n" + "\n".join(lines) if lines else "") + (f"\n{hint}" if hint else "")
    tail += "\n" + ANSWER_INSTRUCTION
    room = MAX_PROMPT_CHARS - len(tail)
    if len(question) > room:
        if room < 40:
            raise ValueError(f"prompt options and hint alone need {len(tail)} chars > cap {MAX_PROMPT_CHARS}")
        question = question[: room - 4].rstrip() + " ..."
    return question + tail


def build_solution(gold: str, rationale: str | None = None) -> str:
    """The reference solution: ``<think>rationale</think><answer>gold</answer>``."""
    rationale = (rationale or "").strip() or DEFAULT_RATIONALE
    return f"<think>{to_charset(rationale)}</think><answer>{gold}</answer>"


def _squeeze(text: str) -> str:
    """Collapse runs of spaces (not newlines) left by transliteration."""
    return re.sub(r" {2,}", " ", text)


def make_problem(
    *, dataset: str, pid: str, source: str, question: str, image: np.ndarray, image_path: Path,
    gold: str, multiple_choice: bool, choices: Sequence[str] = (), hint: str = "",
    rationale: str | None = None, difficulty: int = 3, dataset_answer_type: str = "text",
    precision: float | None = None, meta: dict[str, Any] | None = None,
) -> Problem:
    """A :class:`Problem` from a parsed record (``gold`` is the option letter when ``multiple_choice``).

    ``meta`` gets the scorer's contract (:func:`lavida_envs.rewards.math.check_answer`):
    ``choices`` (option texts; ``None`` for free form) and ``answer_type`` (``choice`` for
    multiple choice, ``text`` for word answers, else ``math``), plus ``question_type``,
    ``dataset_answer_type``, ``precision``, ``original_id``, ``image_path``,
    ``untransliterated_chars`` and the loader's extras.
    """
    shown = [_squeeze(to_charset(c)).strip() for c in choices]
    _, unknown = transliterate(question + "".join(choices))
    scorer_type = "choice" if multiple_choice else ("text" if dataset_answer_type == "text" else "math")
    info = {
        "choices": shown if multiple_choice else None,
        "answer_type": scorer_type,
        "question_type": "multi_choice" if multiple_choice else "free_form",
        "dataset_answer_type": dataset_answer_type,
        "precision": precision,
        "original_id": pid,
        "image_path": str(image_path),
        "untransliterated_chars": unknown,
        **(meta or {}),
    }
    gold = _squeeze(to_charset(str(gold))).strip()
    if not gold:
        raise DatasetError(image_path, "answer", f"{dataset} record {pid}: empty gold answer",
                           "give the record its answer (a record without one scores 0 for every action)")
    return Problem(
        prompt=build_prompt(question, shown, hint),
        image=image,
        answer=gold,
        solution=build_solution(gold, rationale),
        difficulty=int(min(5, max(1, difficulty))),
        key=f"{dataset}:{pid}",
        source=source,
        meta=info,
    )
