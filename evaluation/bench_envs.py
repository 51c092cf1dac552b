"""``lavida bench envs``: environment throughput on one CPU core, printed as a table.

For any registered env id it measures, over the same ``--n`` problem indices:

* ``reset``        -- ``env.reset(options={"index": i})``: draw the content, check the gold,
  render, build the observation (what a trainer pays per problem);
* ``reset+step``   -- the same plus ``env.step(reference solution)``, i.e. real answer
  checking (math-verify workers for VisualMath, box IoU for Grounding, ...);
* ``build_problem`` -- ``env.unwrapped.build_problem`` on specs drawn beforehand (no
  sampling, no split redraws, no Gymnasium wrappers): the bare cost of making the problem;
* ``render only``  -- ``env.unwrapped.render_spec`` on the same specs, where the env has one
  (VisualMath: the family's drawing function alone).

Ratios are relative to ``build_problem``. Per-problem caches (``env.clear_caches()`` where
the env has one) are cleared before each pass, so every pass does the same work. The
process (and the answer-checking workers it starts) is pinned to one core with ``--core``.
The VisualMath issue target is >= 500 resets/s at the defaults.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from typing import Any

from agents.cli_args import ArgumentParser, at_least, nonempty
from evaluation.throughput import record

__all__ = ["main"]


def _difficulty(text: str) -> int | str:
    if text == "mixed" or text in {"1", "2", "3", "4", "5"}:
        return text if text == "mixed" else int(text)
    raise argparse.ArgumentTypeError(f"use a level 1..5 or 'mixed', got {text!r}")


_difficulty.number = True  # type: ignore[attr-defined]  # a level: swept with numbers (tests/test_cli_sweep.py)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lavida bench envs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="LaViDa/VisualMath-v0", type=nonempty, help="registered env id (default: %(default)s)")
    parser.add_argument("--n", type=at_least(1), default=2000, help="problems per measurement (default: %(default)s)")
    parser.add_argument("--difficulty", type=_difficulty, default="mixed", help="level 1..5 or 'mixed' (default)")
    parser.add_argument("--image-size", type=at_least(8), default=None, help="image_size kwarg (default: the env's)")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--offset", type=at_least(0), default=0, help="first problem index (default: 0)")
    parser.add_argument("--core", type=at_least(-1), default=0, help="CPU core to pin to; -1 leaves affinity alone")
    parser.add_argument("--target", type=at_least(0, float, above=True), default=500.0, help="resets/s to report against (default: 500)")
    return parser


def _pin(core: int) -> str:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if core < 0 or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[core % len(cores)]
    os.sched_setaffinity(0, {chosen})
    return f"pinned to core {chosen}"


def _rate(fn: Callable[[Any], Any], items: list, clear: Callable[[], None]) -> float:
    clear()  # each pass starts from the same (cold) per-problem caches
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / max(time.perf_counter() - start, 1e-9)


def _oracle_action(env, info: dict) -> Any:
    """The reference action reset gave: the solution text, or text + exact target image for edits."""
    return info["reference_action"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida bench envs`` command line; bad values exit 2 with one line naming the flag."""
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure and print env throughput; returns 0."""
    args = parse_args(argv)
    where = _pin(args.core)
    import gymnasium as gym

    import lavida_envs  # noqa: F401  (registers the ids)

    kwargs: dict[str, Any] = {"split": args.split, "difficulty": args.difficulty}
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    env = gym.make(args.env, **kwargs)
    base = env.unwrapped
    indices = list(range(args.offset, args.offset + args.n))

    warm = indices[: min(20, len(indices))]  # start answer-checking workers, fill font caches
    for i in warm:
        _, info = env.reset(options={"index": i + 10**7})
        env.step(_oracle_action(env, info))

    def reset_step(i: int) -> None:
        _, info = env.reset(options={"index": i})
        env.step(_oracle_action(env, info))

    drawn = [base.spec_for(i) for i in indices]
    states = [(spec, rng.getstate(), level) for spec, rng, level in drawn]

    def replay(fn: Callable) -> Callable:
        def run(item) -> None:
            spec, state, level = item
            rng = random.Random()
            rng.setstate(state)
            fn(spec, rng, level)
        return run

    clear = getattr(base, "clear_caches", lambda: None)
    rows = [
        ("reset (generate+render)", _rate(lambda i: env.reset(options={"index": i}), indices, clear)),
        ("reset+step (oracle answer)", _rate(reset_step, indices, clear)),
        ("build_problem (pre-drawn spec)", _rate(replay(base.build_problem), states, clear)),
    ]
    if hasattr(base, "render_spec"):
        rows.append(("render only (pre-drawn spec)", _rate(replay(base.render_spec), states, clear)))
    bare = rows[2][1]
    size = base.observation_space["image"].shape[0]
    print(f"env {args.env}  split={args.split}  difficulty={args.difficulty}  image_size={size}  "
          f"n={args.n}  {where}")
    print(f"{'measure':<32}{'per s':>10}{'ms each':>10}{'vs build_problem':>18}")
    for name, rate in rows:
        print(f"{name:<32}{rate:>10.1f}{1000 / rate:>10.3f}{rate / bare:>17.2f}x")
    for name, rate in rows[:2]:
        record("envs", f"{args.env.split('/')[-1]} {name.split(' ')[0]}", rate, "/s", rate / bare, "build_problem alone")
    verdict = "meets" if rows[0][1] >= args.target else "BELOW"
    print(f"reset rate {rows[0][1]:.0f}/s {verdict} the target of {args.target:.0f}/s")
    env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
