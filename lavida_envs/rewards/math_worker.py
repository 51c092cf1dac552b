"""Subprocess worker that compares math answers with math-verify (stdlib + math-verify only).

Started by :mod:`lavida_envs.rewards.math_pool` (loaded by file path, so the worker does
not import the ``lavida_envs`` package); ``python -m lavida_envs.rewards.math_worker``
runs it by hand.

Protocol (one JSON object per line; the parent side is :mod:`lavida_envs.rewards.math_pool`):

* worker -> parent, once at start: ``{"ready": true, "pid": int}``
* parent -> worker: ``{"id": int, "timeout": float, "items": [[[pred, gold], ...], ...]}``;
  each item is a list of candidate (pred, gold) LaTeX pairs (from
  ``math_normalize.candidate_pairs``) and is equal when any pair is.
* worker -> parent, one line per item as soon as it is done:
  ``{"id": int, "i": int, "equal": bool, "status": "ok" | "parse_error" | "timeout",
  "error": str | null}``.

Safety: answers are parsed only with math-verify's ``LatexExtractionConfig`` (the
antlr-based latex2sympy grammar). ``ExprExtractionConfig`` is never used because it
calls ``sympy.parse_expr``, which evaluates Python; the only ``sympify`` on the latex
path is ``sympy.Number`` on a lexer NUMBER token (digits only). The worker caps its
address space (``RLIMIT_AS``, ``LAVIDA_MATH_WORKER_MEM_MB``, default 2048), stops each
item after a soft timeout (``SIGALRM``; the parent kills the process at the hard
timeout when that is not enough), exits on stdin EOF and when its parent dies.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

#: Fraction of the per-item timeout after which the worker gives up by itself.
SOFT_TIMEOUT_FRACTION = 0.8
#: Parsed gold answers kept per worker.
GOLD_CACHE_SIZE = 4096


#: Pairs checked once at start so the antlr parser's DFA cache is warm for common shapes.
WARMUP_PAIRS = (
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), (r"\frac{\pi}{3}", r"0.5\pi"), ("(1,2]", "[1,2)"),
    (r"\{1,2\}", r"\{2,1\}"), ("y=2x+1", "(x+1)^2"), (r"5 \text{ cm}", "5"),
)


class _SoftTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so library ``except Exception`` blocks don't eat it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def _cap_memory() -> None:
    try:
        import resource

        mb = int(os.environ.get("LAVIDA_MATH_WORKER_MEM_MB", "2048"))
        if mb > 0:
            limit = mb * 1024 * 1024
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not Linux/Unix, or a stricter limit already
        pass


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # re-parented: the parent died without closing our stdin
            os._exit(0)


class Checker:
    """math-verify with LaTeX-only extraction and a cache of parsed golds."""

    def __init__(self) -> None:
        import logging

        from math_verify import LatexExtractionConfig, parse, verify

        logging.getLogger("math_verify").setLevel(logging.CRITICAL)
        self._parse, self._verify = parse, verify
        self._config = [LatexExtractionConfig()]
        self._golds: OrderedDict[str, list[Any]] = OrderedDict()

    def parse(self, latex: str) -> list[Any]:
        """Parsed sympy objects for ``latex`` (wrapped in ``$...$``); [] when unparsable."""
        return self._parse(
            "$" + latex + "$",
            extraction_config=self._config,
            fallback_mode="no_fallback",
            parsing_timeout=None,
        )

    def gold(self, latex: str) -> list[Any]:
        """Parsed gold, cached (golds repeat across a group of rollouts)."""
        if latex in self._golds:
            self._golds.move_to_end(latex)
            return self._golds[latex]
        parsed = self.parse(latex)
        self._golds[latex] = parsed
        if len(self._golds) > GOLD_CACHE_SIZE:
            self._golds.popitem(last=False)
        return parsed

    def equal(self, pred: str, gold: str) -> tuple[bool, str, str | None]:
        """(equal, status, error) for one pair of cleaned answers."""
        gold_parsed = self.gold(gold)
        pred_parsed = self.parse(pred)
        if not pred_parsed:
            return False, "parse_error", f"could not parse the answer {pred[:80]!r} as LaTeX math"
        if not gold_parsed:
            return False, "parse_error", f"could not parse the gold answer {gold[:80]!r} as LaTeX math"
        equal = bool(self._verify(gold_parsed, pred_parsed, timeout_seconds=None))
        return equal, "ok", None

    def item(self, pairs: list[list[str]]) -> tuple[bool, str, str | None]:
        """Equal when any candidate pair is; the first pair's status otherwise."""
        first: tuple[bool, str, str | None] | None = None
        for pred, gold in pairs:
            result = self.equal(pred, gold)
            if result[0]:
                return result
            first = first or result
        return first or (False, "parse_error", "no candidate pairs")


def serve(inp: Any, out: Any) -> None:
    """Answer requests from ``inp`` on ``out`` until EOF."""
    checker = Checker()
    for pred, gold in WARMUP_PAIRS:  # warm the grammar and sympy caches before ready
        checker.equal(pred, gold)
    signal.signal(signal.SIGALRM, _on_alarm)
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in inp:
        try:
            request = json.loads(line)
            batch, timeout, items = request["id"], float(request["timeout"]), request["items"]
        except (ValueError, KeyError, TypeError) as exc:
            out.write(json.dumps({"id": -1, "i": -1, "equal": False, "status": "parse_error",
                                  "error": f"bad request: {exc}"}) + "\n")
            out.flush()
            continue
        for index, pairs in enumerate(items):
            try:
                signal.setitimer(signal.ITIMER_REAL, max(0.05, timeout * SOFT_TIMEOUT_FRACTION))
                try:
                    equal, status, error = checker.item(pairs)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _SoftTimeout:  # also catches an alarm that fires inside the finally above
                equal, status, error = False, "timeout", f"math check exceeded {timeout:g}s"
            except MemoryError:
                equal, status, error = False, "parse_error", "math check hit the worker memory cap"
            except RecursionError:
                equal, status, error = False, "parse_error", "math check recursed too deep"
            except Exception as exc:  # a parser bug on odd input must not kill the worker
                equal, status, error = False, "parse_error", f"{type(exc).__name__}: {str(exc)[:160]}"
            reply = {"id": batch, "i": index, "equal": equal, "status": status, "error": error}
            out.write(json.dumps(reply) + "\n")
            out.flush()


def main() -> int:
    """Entry point of ``python -m lavida_envs.rewards.math_worker``."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (Python or C) from libraries must not corrupt the protocol
    sys.stdout = sys.stderr
    _cap_memory()
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        serve(sys.stdin, protocol)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
