"""``lavida bench rewards``: math reward speed and accuracy, ours vs a raw math-verify loop.

On the labelled pairs in ``lavida_envs.rewards.math_cases.CASES`` (repeated ``--repeat``
times) it measures

(a) raw: one process, ``math_verify.parse`` + ``verify`` per pair with math-verify's
    default extraction configs, both answers wrapped in ``$...$``, the gold parsed every
    time (the usual way it is called; run here only on the trusted case list);
(b) ours: ``math_equal_batch`` (cascade + exact numeric path in the parent, LaTeX-only
    math-verify in worker subprocesses with cached golds), workers warmed up first;

and prints checks/s and accuracy against the labels for both, and the ratios ours/raw.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from agents.cli_args import ArgumentParser, at_least
from evaluation.throughput import record
from lavida_envs.rewards.math_cases import CASES


def _raw_loop(pairs: list[tuple[str, str]], timeout: int) -> list[bool]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    out = []
    for pred, gold in pairs:
        gold_parsed = parse("$" + gold + "$", parsing_timeout=timeout)
        pred_parsed = parse("$" + pred + "$", parsing_timeout=timeout)
        out.append(bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout)))
    return out


def _accuracy(predicted: list[bool], expected: list[bool]) -> float:
    return sum(p == e for p, e in zip(predicted, expected)) / max(1, len(expected))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida bench rewards`` command line; bad values exit 2 with one line naming the flag."""
    parser = ArgumentParser(prog="lavida bench rewards", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=at_least(1), default=3, help="passes over the case list (default 3)")
    parser.add_argument("--timeout", type=at_least(1, float), default=3.0, help="per-check timeout in seconds (>= 1)")
    parser.add_argument("--workers", type=at_least(0), default=0, help="math worker processes (0: CPU count, max 4)")
    parser.add_argument("--show-misses", action="store_true", help="list the cases each method gets wrong")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the numbers."""
    args = parse_args(argv)
    if args.workers:
        os.environ["LAVIDA_MATH_WORKERS"] = str(args.workers)
    from lavida_envs.rewards import math as math_reward

    pairs = [(pred, gold) for pred, gold, _ in CASES]
    expected = [label for _, _, label in CASES]
    n = len(pairs) * args.repeat

    _raw_loop(pairs[:3], int(args.timeout))  # import and warm math-verify
    start = time.perf_counter()
    for _ in range(args.repeat):
        raw = _raw_loop(pairs, max(1, int(args.timeout)))
    raw_s = time.perf_counter() - start

    math_reward.warmup()
    start = time.perf_counter()
    for _ in range(args.repeat):
        ours = math_reward.math_equal_batch(pairs, timeout=args.timeout)
    ours_s = time.perf_counter() - start
    workers = len(math_reward._pool().workers)
    math_reward.shutdown()

    raw_rate, ours_rate = n / raw_s, n / ours_s
    raw_acc, ours_acc = _accuracy(raw, expected), _accuracy(ours, expected)
    print(f"cases: {len(pairs)} x {args.repeat} passes = {n} checks; cpu cores: {os.cpu_count()}")
    print(f"raw math-verify loop (1 process): {raw_rate:8.1f} checks/s  accuracy {raw_acc:.3f}")
    print(f"ours math_equal_batch ({workers} workers): {ours_rate:8.1f} checks/s  accuracy {ours_acc:.3f}")
    print(f"ratio ours/raw: speed x{ours_rate / raw_rate:.2f}  accuracy x{ours_acc / max(raw_acc, 1e-9):.3f}")
    record("rewards", f"math checks/s ({workers} workers)", ours_rate, "/s", ours_rate / raw_rate, "raw math-verify loop")
    record("rewards", "math accuracy on the case list", ours_acc, "", ours_acc / max(raw_acc, 1e-9), "raw math-verify loop")
    if args.show_misses:
        for name, got in (("raw", raw), ("ours", ours)):
            for (pred, gold, label), value in zip(CASES, got):
                if value != label:
                    print(f"  {name} miss: pred={pred!r} gold={gold!r} expected={label} got={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
