"""``lavida bench train``: seconds per trainer step and response tokens/s, SFT vs RL steps.

Runs the real trainer (:class:`agents.trainer.Trainer`) on ``configs/demo.yaml`` shrunk by
the flags below, once in phase ``sft`` and once in phase ``rl`` (same tiny policy, same task
mix), in a temporary directory, and reads the step times from its ``metrics.jsonl``.
The first step of each phase is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from agents.cli_args import ArgumentParser, at_least, nonempty
from evaluation.throughput import record

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _steps(config_path: Path, out: Path, **overrides) -> list[dict]:
    from agents.config import load_config
    from agents.trainer import Trainer

    config = load_config(str(config_path), output_dir=str(out), eval_every=0, eval_episodes=0, save_every=0,
                         **overrides)  # fmt: skip
    Trainer(config).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


def _step_seconds(rows: list[dict]) -> list[float]:
    times = [float(r["time"]) for r in rows]
    return [b - a for a, b in zip(times, times[1:])]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida bench train`` command line; bad values exit 2 with one line naming the flag."""
    p = ArgumentParser(prog="lavida bench train", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG), type=nonempty, help="trainer preset to shrink (default configs/demo.yaml)")
    p.add_argument("--steps", type=at_least(2), default=4, help="steps per phase (the first is warm-up)")
    p.add_argument("--prompts", type=at_least(1), default=2, help="prompts_per_step (RL) and sft_per_step")
    p.add_argument("--generations", type=at_least(1), default=4, help="num_generations per prompt")
    p.add_argument("--tasks", default="visual_math:1,grounding:1,image_edit:1", type=nonempty, help="task mixture")
    p.add_argument("--cache", nargs="+", default=["none"], choices=["none", "prefix", "dual"],
                   help="KV-cache modes of the RL rollouts, timed in interleaved rounds (ratios vs the first)")
    p.add_argument("--rounds", type=at_least(1), default=1, help="interleaved rounds over the --cache modes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure and print trainer step times; returns 0."""
    args = parse_args(argv)
    common = {"tasks": args.tasks, "sft_per_step": args.prompts, "prompts_per_step": args.prompts,
              "num_generations": args.generations}  # fmt: skip
    rl_times: dict[str, list[float]] = {mode: [] for mode in args.cache}
    rl_tokens: dict[str, list[float]] = {mode: [] for mode in args.cache}
    with tempfile.TemporaryDirectory() as tmp:
        sft = _steps(Path(args.config), Path(tmp) / "sft", phase="sft", max_steps=args.steps, **common)
        for r in range(args.rounds):
            for mode in args.cache:
                rl = _steps(Path(args.config), Path(tmp) / f"rl-{mode}-{r}", phase="rl", sft_steps=0,
                            max_steps=args.steps, cache=mode, **common)  # fmt: skip
                rl_times[mode] += _step_seconds(rl)
                rl_tokens[mode] += [float(row.get("tokens_per_s", 0.0)) for row in rl[1:]]
    sft_s = statistics.median(_step_seconds(sft))
    print(f"config {args.config}  tasks {args.tasks}  {args.prompts} prompts x {args.generations} generations")
    print(f"{'phase':<16}{'s/step (median)':>18}{'steps timed':>13}")
    print(f"{'sft':<16}{sft_s:>18.2f}{len(sft) - 1:>13}")
    first = args.cache[0]
    for mode in args.cache:
        rl_s, tokens = statistics.median(rl_times[mode]), statistics.median(rl_tokens[mode])
        print(f"{'rl cache=' + mode:<16}{rl_s:>18.2f}{len(rl_times[mode]):>13}   tokens/s {tokens:.0f}   "
              f"RL/SFT x{rl_s / sft_s:.2f}   speedup vs cache={first} x{statistics.median(rl_times[first]) / rl_s:.2f}")
        record("train", f"RL step, cache={mode} (sample+score+loss+update)", rl_s, "s", rl_s / sft_s, "SFT step")
        record("train", f"RL response tokens/s, cache={mode}", tokens, "/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
