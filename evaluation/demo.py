"""``lavida demo``: the whole pipeline end to end on CPU, written under ``runs/demo/``.

Stages (each a plain call of the same code the CLI commands run):

1. LaViDa-R1 agent: SFT warm start of ``DiffusionPolicy.tiny`` on the reference solutions
   of the task mixture, then unified RL (``configs/demo.yaml``: SFT rows + GRPO +
   self-distillation, answer forcing, tree search on editing, complementary likelihood).
2. Baseline at the same budget: the tiny autoregressive policy, same SFT steps, then plain
   GRPO + KL (``configs/ar_grpo.yaml``, with the demo's group size and step count).
3. ``lavida eval`` of every policy (the two SFT starts, the two RL results, random and
   oracle) on the test split of ``LaViDa/MultiTask-v0`` (difficulty and image size as trained).
4. ``lavida leaderboard``: ``runs/demo/leaderboard.{md,csv,png}``, printed at the end.

``--quick`` shrinks every budget for a smoke run (a few minutes). The budgets are flags, so
the same command scales up; the configs in ``configs/`` hold everything else. ``--threads N``
sets torch's CPU threads for every stage (default :func:`evaluation.runtime.default_threads`,
or ``$OMP_NUM_THREADS``); ``demo_timings.json`` records it with the stage times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from evaluation.runtime import add_threads_argument, apply_threads

#: ``configs/`` of the source tree (the README installs the project editable).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ENV_ID = "LaViDa/MultiTask-v0"


@dataclass(frozen=True)
class Budget:
    """How much work each stage does."""

    sft_steps: int
    rl_steps: int
    episodes: int


FULL = Budget(sft_steps=800, rl_steps=20, episodes=60)
QUICK = Budget(sft_steps=20, rl_steps=3, episodes=12)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lavida demo",
        description="Train a tiny LaViDa-R1 diffusion policy and an AR GRPO baseline on CPU, evaluate them "
        "with random and oracle policies on the MultiTask test split, and write a leaderboard.",
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of a few minutes")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--sft-steps", type=int, default=None, help="SFT warm-start steps per policy")
    p.add_argument("--rl-steps", type=int, default=None, help="RL steps per policy")
    p.add_argument("--episodes", type=int, default=None, help="test episodes per evaluated policy")
    p.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    p.add_argument("--force", action="store_true", help="start over even if OUT already holds results")
    add_threads_argument(p)
    return p.parse_args(argv)


def _budget(args: argparse.Namespace) -> Budget:
    base = QUICK if args.quick else FULL
    return Budget(
        sft_steps=args.sft_steps if args.sft_steps is not None else base.sft_steps,
        rl_steps=args.rl_steps if args.rl_steps is not None else base.rl_steps,
        episodes=args.episodes if args.episodes is not None else base.episodes,
    )


def _train(config_file: str, out: Path, **overrides) -> None:
    from agents.config import load_config
    from agents.trainer import Trainer

    path = CONFIG_DIR / config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run lavida demo from a source checkout (pip install -e .)")
    config = load_config(str(path), output_dir=str(out), **overrides)
    if config.phase == "sft":  # the preset's learning_rate is its RL rate; a warm start uses sft_learning_rate
        config = dataclasses.replace(config, learning_rate=config.sft_learning_rate).validate()
    Trainer(config).train()


def _stage(name: str, fn, timings: dict[str, float]) -> None:
    print(f"\n=== {name}", flush=True)
    start = time.perf_counter()
    fn()
    timings[name] = time.perf_counter() - start
    print(f"=== {name}: {timings[name]:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns a process exit code."""
    args = _parse(argv)
    if args.threads is not None and args.threads < 1:
        print(f"lavida demo: --threads must be >= 1, got {args.threads}")
        return 2
    threads = apply_threads(args.threads)
    print(f"torch CPU threads: {threads['threads']} ({threads['source']}; {threads['cores']} cores)", flush=True)
    budget = _budget(args)
    out = Path(args.out)
    if (out / "leaderboard.md").exists() and not args.force:
        print(f"{out} already holds a finished demo; pass --force to run it again or --out to choose another dir")
        return 2
    if out.exists() and args.force:
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars between the stages' own
    demo = {"image_size": 64, "difficulty": "1", "seed": args.seed, "eval_every": 0, "eval_episodes": 0}
    timings: dict[str, float] = {}
    arms = {  # name -> (preset, checkpoint dirs)
        "diffusion": ("demo.yaml", out / "diffusion_sft", out / "lavida_r1"),
        "ar": ("ar_grpo.yaml", out / "ar_sft", out / "ar_grpo"),
    }
    group = {"num_generations": 4}  # the AR preset's TRL default (8) would double its rollout budget
    for arm, (preset, sft_dir, rl_dir) in arms.items():
        _stage(f"{arm}: SFT warm start ({budget.sft_steps} steps)",
               lambda: _train(preset, sft_dir, phase="sft", max_steps=budget.sft_steps, **demo), timings)  # noqa: B023
        _stage(f"{arm}: RL ({budget.rl_steps} steps)",
               lambda: _train(preset, rl_dir, phase="rl", sft_steps=0, init_from=str(sft_dir),  # noqa: B023
                              max_steps=budget.rl_steps, **group, **demo), timings)  # fmt: skip
    policies = {
        "lavida-r1 (SFT+RL)": out / "lavida_r1",
        "diffusion SFT only": out / "diffusion_sft",
        "AR GRPO+KL": out / "ar_grpo",
        "AR SFT only": out / "ar_sft",
        "random": "random",
        "oracle": "oracle",
    }
    from evaluation import evaluate, leaderboard

    eval_dirs = []
    for name, spec in policies.items():
        target = out / "eval" / _slug(name)
        eval_dirs.append(str(target))
        argv_eval = [
            "--policy", str(spec), "--env", ENV_ID, "--env-kwargs", "difficulty=1,image_size=64",
            "--split", "test", "--episodes", str(budget.episodes), "--batch-size", "8",
            "--seed", str(args.seed), "--name", name, "--out", str(target), "--threads", str(threads["threads"]),
        ]  # fmt: skip
        if isinstance(spec, Path):  # trained checkpoints: greedy decoding for a deterministic score
            argv_eval += ["--policy-kwargs", "temperature=0"]
        _stage(f"eval {name}", lambda: _check(evaluate.main(argv_eval), "lavida eval"), timings)  # noqa: B023
    board = out / "leaderboard.md"
    _stage("leaderboard", lambda: _check(leaderboard.main([*eval_dirs, "--out", str(board)]), "lavida leaderboard"), timings)
    (out / "demo_timings.json").write_text(json.dumps({"budget": budget.__dict__, "seconds": timings, "threads": threads}, indent=2))
    print("\n" + board.read_text())
    print(f"Wrote {board}, {board.with_suffix('.csv')}, {board.with_suffix('.png')} "
          f"in {sum(timings.values()) / 60:.1f} min.")  # fmt: skip
    return 0


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def _check(code: int, what: str) -> None:
    if code:
        raise RuntimeError(f"{what} failed with exit code {code}")


if __name__ == "__main__":
    raise SystemExit(main())
