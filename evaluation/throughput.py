"""``lavida bench TARGET``: throughput benchmarks, each printing measured numbers and ratios.

Targets are data: name -> module with ``main(argv) -> int``. ``lavida bench all`` runs
every available target in turn.
"""

from __future__ import annotations

import argparse
import importlib

#: bench target -> (module, what it measures)
TARGETS: dict[str, tuple[str, str]] = {
    "rewards": ("evaluation.bench_rewards", "math reward checks/s and accuracy vs a raw math-verify loop"),
    "envs": ("evaluation.bench_envs", "env reset/s and reset+step/s vs a bare render of the same images"),
    "rollout": ("evaluation.bench_rollout", "sampler tokens/s, default vs threshold decoding (and AR)"),
    "likelihood": ("evaluation.bench_likelihood", "variance of the ELBO estimators at equal forward passes"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark target (or all) with its own options after the target name."""
    parser = argparse.ArgumentParser(
        prog="lavida bench",
        description="Throughput benchmarks. Options after TARGET go to that target (try TARGET --help).",
    )
    parser.add_argument("target", choices=[*TARGETS, "all"], help="what to measure")
    args, rest = parser.parse_known_args(argv)
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
        status = int(module.main(rest) or 0) or status
    return status
