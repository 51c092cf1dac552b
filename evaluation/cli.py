"""The ``lavida`` command: demo, train, eval, leaderboard, plot, ablate, bench.

Each subcommand lives in its own module with a ``main(argv) -> int`` function; this file
only dispatches, so ``lavida --help`` stays fast and one broken part cannot hide the others.
``demo``, ``eval`` and ``bench`` take ``--threads N`` themselves; for ``train`` (whose parser has
``--threads``, default torch's) the dispatcher first applies the default of
:mod:`evaluation.runtime` when no ``--threads`` is given, so every command starts with
``$OMP_NUM_THREADS`` or ``min(4, cores // 2)`` torch threads rather than one per core.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("evaluation.demo", "train and evaluate a tiny policy end to end on CPU, write a leaderboard"),
    "train": ("agents.trainer", "train a policy (--phase sft | rl, --config FILE.yaml)"),
    "eval": ("evaluation.evaluate", "evaluate a policy spec on an env id, write results.json"),
    "leaderboard": ("evaluation.leaderboard", "merge results dirs into a Markdown/CSV/PNG leaderboard"),
    "plot": ("evaluation.plot", "draw training curves (PNG) of lavida train runs from their metrics.jsonl"),
    "ablate": ("evaluation.ablate", "run the ablation presets over seeds from one SFT start, table with 95% CIs"),
    "check-policy": ("agents.policy_check", "run a trainable policy spec through every part of the TrainablePolicy contract"),
    "bench": ("evaluation.throughput", "throughput benchmarks: rewards, envs, rollout, likelihood, train"),
}


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: lavida COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'lavida COMMAND --help' for the options of one command."]
    return "\n".join(lines)


def _default_train_threads() -> None:
    """``lavida train`` without ``--threads``: the non-oversubscribing default (:mod:`evaluation.runtime`)."""
    from evaluation.runtime import apply_threads

    apply_threads(None)  # $OMP_NUM_THREADS if set, else min(4, cores // 2); the trainer's --threads overrides


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lavida`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lavida: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name == "train" and not any(a == "--threads" or a.startswith("--threads=") for a in rest):
        _default_train_threads()
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"lavida {name}: not available in this version (module {module_name} missing)", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
