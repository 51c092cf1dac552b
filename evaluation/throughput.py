"""``lavida bench TARGET``: throughput benchmarks, each printing measured numbers and ratios.

Targets are data: name -> module with ``main(argv) -> int``. ``lavida bench all`` runs
every available target in turn. Each target also calls :func:`record` for its headline
numbers, and ``lavida bench`` ends with one table of them: value and ratio to the baseline
that target measures against (raw math-verify loop, bare render, random_mask, ...).
``--threads N`` (anywhere after ``bench``) sets torch's CPU threads before the targets run
(default :func:`evaluation.runtime.default_threads`, or ``$OMP_NUM_THREADS``) and is printed
first; the rollout, cache and likelihood targets, which set their own (default 1), get it too.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

from agents.cli_args import ArgumentParser, at_least
from evaluation.runtime import THREADS_HELP, apply_threads

#: bench target -> (module, what it measures)
TARGETS: dict[str, tuple[str, str]] = {
    "rewards": ("evaluation.bench_rewards", "math reward checks/s and accuracy vs a raw math-verify loop"),
    "envs": ("evaluation.bench_envs", "env reset/s and reset+step/s vs a bare render of the same images"),
    "rollout": ("evaluation.bench_rollout", "sampler tokens/s, default vs threshold decoding (and AR)"),
    "cache": ("evaluation.bench_cache", "KV-cached diffusion rollouts on the three tasks: none/prefix/dual, threshold, AR"),
    "likelihood": ("evaluation.bench_likelihood", "variance of the ELBO estimators at equal forward passes"),
    "train": ("evaluation.bench_train", "trainer step time and tokens/s, SFT vs RL steps"),
}


@dataclass(frozen=True)
class Row:
    """One headline number of a benchmark and its ratio to that benchmark's baseline."""

    bench: str
    measure: str
    value: float
    unit: str
    ratio: float | None = None
    versus: str = ""


_ROWS: list[Row] = []
#: targets whose own parser has ``--threads`` (default 1), which ``lavida bench --threads N`` forwards
_OWN_THREADS_FLAG = ("rollout", "cache", "likelihood")


def _pop_threads(argv: list[str]) -> tuple[int | None, list[str]]:
    """``(--threads value or None, argv without it)``."""
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--threads" or arg.startswith("--threads="):
            raw = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if "=" in arg else 2
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"--threads needs an integer >= 1, got {raw!r}") from None
            if value < 1:
                raise ValueError(f"--threads needs an integer >= 1, got {value}")
            continue
        rest.append(arg)
        i += 1
    return value, rest


def record(bench: str, measure: str, value: float, unit: str, ratio: float | None = None, versus: str = "") -> None:
    """Add a headline number to the summary table ``lavida bench`` prints at the end."""
    _ROWS.append(Row(bench, measure, float(value), unit, None if ratio is None else float(ratio), versus))


def summary_table(rows: list[Row]) -> str:
    """The recorded rows as one Markdown table."""
    lines = ["| bench | measure | value | ratio | vs |", "|---|---|---:|---:|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else (f"{r.ratio:.2f}x" if r.ratio >= 0.01 else f"{r.ratio:.2g}x")
        lines.append(f"| {r.bench} | {r.measure} | {r.value:,.4g} {r.unit} | {ratio} | {r.versus} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str], int | None]:
    """``(args, the target's own argv, --threads or None)``; a bad target or --threads exits 2 on one line."""
    parser = ArgumentParser(
        prog="lavida bench",
        description="Throughput benchmarks. Options after TARGET go to that target (try TARGET --help).",
    )
    parser.add_argument("target", choices=[*TARGETS, "all"], help="what to measure")
    parser.add_argument("--threads", type=at_least(1), default=None, metavar="N",
                        help=THREADS_HELP + "; before or after TARGET. The rollout, cache and likelihood benches get it too "
                        "(their own default is 1)")  # fmt: skip
    argv = list(argv or [])
    try:
        requested, argv = _pop_threads(argv)
    except ValueError as exc:
        parser.error(str(exc))
    args = parser.parse_args(argv[:1])  # the target's own flags (and its --help) go to the target
    return args, argv[1:], requested


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark target (or all) with its own options after the target name."""
    args, rest, requested = parse_args(argv)
    threads = apply_threads(requested)
    print(f"torch CPU threads: {threads['threads']} ({threads['source']}; {threads['cores']} cores)")
    names = list(TARGETS) if args.target == "all" else [args.target]
    status = 0
    for name in names:
        module_name, text = TARGETS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            print(f"[bench {name}] not available in this version ({module_name} missing)")
            status = status or 2
            continue
        print(f"== bench {name}: {text}")
        own = ["--threads", str(requested)] if requested is not None and name in _OWN_THREADS_FLAG else []
        status = int(module.main([*rest, *own]) or 0) or status
    if _ROWS:
        print("\n== summary\n" + summary_table(_ROWS))
    return status
