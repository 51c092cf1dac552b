"""Verifiable math reward: extract the final answer, compare it with the gold, never hang.

Contract:

* ``extract_answer(text)`` -- the last ``<answer>…</answer>`` block (a whole-block
  ``\\boxed{}`` inside it is unwrapped), else the last balanced ``\\boxed{…}``; stripped;
  ``None`` when absent or blank.
* ``math_equal(pred, gold, timeout=3.0) -> bool`` and ``math_equal_batch(pairs, timeout)``
  compare answer strings. ``check_answer(text, gold, choices=, answer_type=, timeout=)``
  extracts from a full model output and returns a :class:`MathVerdict` ``(correct,
  parsed, status, error)`` with status in ``ok | no_answer | too_long | rejected |
  parse_error | timeout | worker_error``; the math accuracy reward is
  ``float(verdict.correct)``. ``timeout`` is the answer's fault (its check ran out of
  time); ``worker_error`` is the verifier's (a worker died on the item ``MAX_RETRIES`` + 1
  times, or workers could not start) and is counted apart.
  ``answer_type``: ``None``/``"auto"``/``"math"`` run the full cascade below;
  ``"choice"`` (implied by ``choices``) takes a letter in any common form, or text equal
  to the gold option; ``"number"`` accepts plain numbers only (exact, percent rule);
  ``"text"`` compares case- and space-insensitively.

Cascade per pair (cheap first; only the last step leaves the parent process):
``screen`` (length cap, character whitelist, code-like tokens, nesting / power-tower
limits -> too_long / rejected) -> ``clean`` -> identical strings -> choice letters
(``A`` = ``(A)`` = ``\\text{A}`` = ``A: text``) -> word answers (case-insensitive) ->
exact numbers (``Fraction``; percent and degree rules in :mod:`math_normalize`) ->
math-verify on LaTeX in worker subprocesses (:mod:`math_worker`).

Workers are ``subprocess.Popen`` children speaking JSON lines (gymnasium's
AsyncVectorEnv runs envs in daemonic processes, which cannot own multiprocessing
children). Up to ``LAVIDA_MATH_WORKERS`` (default: the CPU count, at most 4) take
batches of pairs per message and get a hard per-check deadline: a worker that misses it
is killed and replaced, and the check reports ``timeout``. A worker that dies (OOM
killer, ``kill -9``) has its item re-checked on another worker (see
:mod:`math_pool`). A forked child never reuses its parent's workers (pid check);
workers are killed at exit.

Start-up and the timeout. Importing math-verify takes 1-2 s on an idle core (8-17 s
measured on a loaded 2-core machine), and that wait is not part of any check:
:func:`prestart` makes one worker ready (blocking, at most ``STARTUP_TIMEOUT``); a batch
that could use more workers starts them in the background, and they take work once ready. ``LaViDa/VisualMath-v0`` calls it when it builds a problem
(so in ``reset``, once per process), so every ``env.step`` check meets its ``timeout``
from the caller's side. A direct caller of :func:`check_answer` / :func:`math_equal`
should call :func:`prestart` (or :func:`warmup`) first; otherwise its first check in a
process also waits for that start-up.
Nothing here evaluates model output: no ``eval``, no ``sympify``/``parse_expr``.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import threading
from dataclasses import dataclass

from lavida_envs.rewards import math_normalize as mn
from lavida_envs.rewards.format import find_boxed
from lavida_envs.rewards.math_pool import Result, WorkerPool

__all__ = [
    "MathVerdict",
    "check_answer",
    "extract_answer",
    "math_equal",
    "math_equal_batch",
    "prestart",
    "shutdown",
    "warmup",
]

#: Full model outputs longer than this are not searched for an answer.
MAX_TEXT_CHARS = 1 << 16
#: Largest per-check timeout accepted, in seconds.
MAX_TIMEOUT = 600.0
#: Statuses a :class:`MathVerdict` may carry.
STATUSES = ("ok", "no_answer", "too_long", "rejected", "parse_error", "timeout", "worker_error")
ANSWER_TYPES = (None, "auto", "math", "choice", "number", "text")

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass
class MathVerdict:
    """Outcome of grading one model output: correct?, what was parsed, status and reason."""

    correct: bool
    parsed: str | None
    status: str
    error: str | None = None


def extract_answer(text: str) -> str | None:
    """The last ``<answer>`` block, else the last balanced ``\\boxed{}``; stripped; None if absent."""
    if not isinstance(text, str):
        return None
    blocks = _ANSWER.findall(text)
    if blocks:
        answer = blocks[-1].strip()
        boxes = find_boxed(answer)
        if len(boxes) == 1 and re.fullmatch(r"\$*\s*\\(?:boxed|fbox)\s*\{.*\}\s*\$*", answer, re.DOTALL):
            answer = boxes[0].strip()
        return answer or None
    boxes = find_boxed(text)
    if boxes:
        return boxes[-1].strip() or None
    return None


# ----- the worker pool (one per process; rebuilt after fork) ----------------------------
_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> WorkerPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            if _POOL is not None:
                _POOL.abandon()  # a forked copy: the workers belong to the parent
            size = int(os.environ.get("LAVIDA_MATH_WORKERS", "0")) or min(4, os.cpu_count() or 1)
            _POOL = WorkerPool(max(1, size))
        return _POOL


def _after_fork_in_child() -> None:
    global _POOL, _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    if _POOL is not None:
        _POOL.abandon()
        _POOL = None


def shutdown() -> None:
    """Kill this process's math workers (they restart lazily on the next check)."""
    global _POOL
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close()
    _POOL = None


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def warmup(num_workers: int | None = None) -> None:
    """Start ``num_workers`` (default: all) math workers now and wait until they are ready."""
    _pool().start(num_workers)


def prestart() -> bool:
    """One math worker ready (blocking, once per process); more start when a batch needs them.

    True when a worker is ready; never raises (a verifier that cannot start reports
    ``worker_error`` on the checks that need it). Cheap once a worker is ready.
    """
    pool = _POOL
    if pool is not None and pool.pid == os.getpid() and pool.has_ready():
        return True
    try:
        return _pool().prestart()
    except OSError:
        return False


# ----- the cascade ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Gold:
    text: str
    letter: str | None
    is_text: bool
    number: mn.Number | None
    residue: str  # the residue of a modular gold (``3`` for ``3 \pmod{7}``), else ``text``
    modulus: str | None


@functools.lru_cache(maxsize=8192)
def _gold(gold: str) -> _Gold:
    text = mn.clean(gold)
    letter = mn.choice_letter(text) if len(text) <= 12 else None
    residue, modulus = mn.split_modulus(text)
    return _Gold(text, letter, mn.is_text_answer(text), mn.parse_number(text), residue, modulus)


def _prepare(pred: str, gold: str) -> Result | list[tuple[str, str]]:
    """A decided result, or the candidate LaTeX pairs the workers must check."""
    if not isinstance(gold, str):
        raise TypeError(f"gold answer must be a str, got {type(gold).__name__}")
    status, reason = mn.screen(pred)
    if status != "ok":
        return Result(False, status, reason)
    text, info = mn.clean(pred), _gold(gold)
    if not text:
        return Result(False, "no_answer", "the answer is empty")
    if not info.text:
        return Result(False, "parse_error", f"the gold answer {gold!r} is empty")
    if text == info.text:
        return Result(True, "ok", None)
    if info.letter is not None:
        letter = mn.choice_letter(text)
        if letter is not None:
            return Result(letter == info.letter, "ok", None)
    if info.is_text:
        return Result(mn.text_key(text) == mn.text_key(info.text), "ok", None)
    gold_text, gold_number = info.text, info.number
    if info.modulus is not None or r"mod" in text:  # modular answers: compare residues
        text, modulus = mn.split_modulus(text)
        if modulus is not None and info.modulus is not None and mn.text_key(modulus) != mn.text_key(info.modulus):
            return Result(False, "ok", None)
        if info.modulus is not None or modulus is not None:
            gold_text, gold_number = info.residue, mn.parse_number(info.residue)
            if text == gold_text:
                return Result(True, "ok", None)
    clock = mn.clocks_equal(text, gold_text)
    if clock is not None:
        return Result(clock, "ok", None)
    number = mn.parse_number(text)
    both_equations = "=" in text and "=" in gold_text  # y = 3 vs x = 3: leave to math-verify
    if number is not None and gold_number is not None and not both_equations:
        return Result(mn.numbers_equal(number, gold_number), "ok", None)
    return mn.candidate_pairs(text, gold_text)


def _compare_batch(pairs: list[tuple[str, str]], timeout: float) -> list[Result]:
    """Results for many (pred, gold) pairs: cheap cascade first, then the worker pool."""
    if not 0 < timeout <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds, got {timeout!r}")
    results: list[Result | None] = [None] * len(pairs)
    pending: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for index, (pred, gold) in enumerate(pairs):
        prepared = _prepare(pred, gold)
        if isinstance(prepared, Result):
            results[index] = prepared
        else:  # identical candidate lists (a group of equal rollouts) are checked once
            pending.setdefault(tuple(prepared), []).append(index)
    if pending:
        keys = list(pending)
        for key, result in zip(keys, _pool().run([list(k) for k in keys], timeout)):
            for index in pending[key]:
                results[index] = result
    return [r if r is not None else Result(False, "parse_error", "internal: unchecked") for r in results]


def math_equal(pred: str, gold: str, timeout: float = 3.0) -> bool:
    """Is answer ``pred`` mathematically equal to ``gold``? Hard ``timeout`` in seconds."""
    return _compare_batch([(pred, gold)], timeout)[0].equal


def math_equal_batch(pairs: list[tuple[str, str]], timeout: float = 3.0) -> list[bool]:
    """:func:`math_equal` for many ``(pred, gold)`` pairs, spread over the worker processes."""
    return [r.equal for r in _compare_batch(list(pairs), timeout)]


def _choice_gold(gold: str, choices: list[str] | None) -> tuple[str, str | None]:
    """(gold letter, gold option text) for a choice question; ValueError when inconsistent."""
    letter = mn.choice_letter(mn.clean(gold))
    if letter is None and choices:
        keys = [mn.text_key(mn.clean(c)) for c in choices]
        key = mn.text_key(mn.clean(gold))
        if key in keys:
            letter = chr(ord("A") + keys.index(key))
    if letter is None:
        raise ValueError(f"gold {gold!r} of a choice question must be a letter A.. or one of the choices")
    if not choices:
        return letter, None
    index = ord(letter) - ord("A")
    if not 0 <= index < len(choices):
        raise ValueError(f"gold letter {letter!r} is out of range for {len(choices)} choices")
    return letter, str(choices[index])


def _check_choice(pred: str, gold: str, choices: list[str] | None, timeout: float) -> Result:
    gold_letter, gold_text = _choice_gold(gold, choices)
    status, reason = mn.screen(pred)
    if status != "ok":
        return Result(False, status, reason)
    letter = mn.choice_letter(mn.clean(pred))
    if letter is not None:
        return Result(letter == gold_letter, "ok", None)
    if gold_text is None:
        return Result(False, "parse_error", f"expected a choice letter, got {pred[:80]!r}")
    return _compare_batch([(pred, gold_text)], timeout)[0]


def check_answer(
    text: str,
    gold: str,
    *,
    choices: list[str] | None = None,
    answer_type: str | None = None,
    timeout: float = 3.0,
) -> MathVerdict:
    """Grade a full model output against ``gold`` (a letter when ``choices`` are given)."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    if not isinstance(text, str):
        return MathVerdict(False, None, "rejected", f"output must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        return MathVerdict(False, None, "too_long", f"output has {len(text)} chars > cap {MAX_TEXT_CHARS}")
    pred = extract_answer(text)
    if pred is None:
        return MathVerdict(False, None, "no_answer", "no <answer>...</answer> block or \\boxed{} found")
    if choices is not None or answer_type == "choice":
        result = _check_choice(pred, gold, choices, timeout)
    elif answer_type == "text":
        status, reason = mn.screen(pred)
        equal = status == "ok" and mn.text_key(mn.clean(pred)) == mn.text_key(mn.clean(gold))
        result = Result(equal, status, reason)
    elif answer_type == "number":
        result = _check_number(pred, gold)
    else:
        result = _compare_batch([(pred, gold)], timeout)[0]
    if result.status == "too_long":
        pred = pred[: mn.MAX_ANSWER_CHARS] + "..."
    return MathVerdict(result.equal, pred, result.status, None if result.equal else result.error)


def _check_number(pred: str, gold: str) -> Result:
    status, reason = mn.screen(pred)
    if status != "ok":
        return Result(False, status, reason)
    gold_number = _gold(gold).number
    if gold_number is None:
        raise ValueError(f"answer_type='number' but the gold {gold!r} is not a plain number")
    number = mn.parse_number(mn.clean(pred))
    if number is None:
        return Result(False, "parse_error", f"expected a plain number, got {pred[:80]!r}")
    return Result(mn.numbers_equal(number, gold_number), "ok", None)
