"""``lavida ablate``: the LaViDa-R1 ablation presets over several seeds from one SFT start.

1. One SFT warm start (``configs/demo.yaml``, phase ``sft``, seed 0) unless ``--init-from``
   names an existing checkpoint: every ablation starts from the same weights, so the seeds
   vary only the RL run (problem draws, sampling, mask seeds, forcing coins).
2. For every preset and seed: ``lavida train --config configs/PRESET.yaml`` in its own
   process (``OMP_NUM_THREADS=--threads``, ``--jobs`` at a time), RL only, with held-out
   evaluation before and after. A run whose ``metrics.jsonl`` already ends with that final
   evaluation is kept, so an interrupted sweep continues where it stopped.
3. :mod:`evaluation.ablation_table` turns the runs into ``ablation.{md,csv,json}``: per
   preset the mean and 95% t-interval over seeds of held-out reward before/after and of the
   training metrics each claim of the paper is about, and ``claims.md``: each claim as a
   difference between two presets with a Welch interval; ``ablation.png``: a bar chart of each
   preset's held-out reward after RL with its interval. ``--table-only`` just rewrites them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agents.cli_args import ArgumentParser, at_least, nonempty
from evaluation.demo import CONFIG_DIR

#: Every preset of the ablation table, the full recipe first.
PRESETS = (
    "demo", "ablate_kl", "ablate_grpo_only", "ablate_no_forcing", "ablate_forcing_always",
    "ablate_no_tree", "ablate_gamma0", "ablate_random_mask", "ablate_mean_field",
    "ablate_single_task_visual_math", "ablate_single_task_grounding", "ablate_single_task_image_edit",
    "ablate_single_task_image_edit_no_tree",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida ablate`` command line (``--set`` as a dict, presets checked); bad values exit 2 on one line."""
    p = ArgumentParser(
        prog="lavida ablate",
        description="Run the LaViDa-R1 ablation presets (configs/ablate_*.yaml) over several seeds from one "
        "shared SFT warm start and write a table of means with 95%% confidence intervals.",
    )
    p.add_argument("--presets", nargs="+", type=nonempty, default=list(PRESETS), help="preset names under configs/ (default: all)")
    p.add_argument("--seeds", nargs="+", type=at_least(0), default=[0, 1, 2], help="RL seeds per preset (default 0 1 2)")
    p.add_argument("--init-from", default=None, type=nonempty, help="SFT checkpoint to start every run from (default: train one)")
    p.add_argument("--sft-steps", type=at_least(1), default=800, help="steps of the shared SFT warm start (default 800)")
    p.add_argument("--rl-steps", type=at_least(1), default=20, help="RL steps per run (default 20)")
    p.add_argument("--eval-episodes", type=at_least(1), default=32, help="held-out problems per task, before and after")
    p.add_argument("--jobs", type=at_least(1), default=2, help="runs at a time (default 2)")
    p.add_argument("--threads", type=at_least(1), default=1, help="torch CPU threads per run (default 1)")
    p.add_argument("--out", default="runs/ablate", type=nonempty, help="output directory (default runs/ablate)")
    p.add_argument("--table-only", action="store_true", help="only (re)write the table from the runs under --out")
    p.add_argument("--merge", default=None, metavar="ABLATION_JSON", type=nonempty,
                   help="an earlier sweep's ablation.json: presets with no runs under --out take its runs")
    p.add_argument("--set", nargs="*", type=nonempty, default=[], metavar="FIELD=VALUE", help="extra TrainConfig overrides for every run")
    args = p.parse_args(argv)
    try:
        args.set = parse_set(args.set)
        for preset in args.presets:
            _preset_path(preset)
            run_overrides(preset, Path("."), args.rl_steps)  # a preset's own start must exist before anything runs
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))
    return args


def _preset_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"preset {name!r}: {path} not found (known: {known})")
    return path


def parse_set(items: list[str]) -> dict[str, str]:
    """``--set FIELD=VALUE ...`` as a dict; an item without ``=`` or a field is an error naming it."""
    out = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE (e.g. image_size=32)")
        out[field] = value
    return out


def train_command(preset: str, out_dir: Path, overrides: dict[str, object]) -> list[str]:
    """The ``lavida train`` process of one run: ``--config`` the preset, then ``--FIELD VALUE`` each override."""
    flags = [part for key, value in {"output_dir": out_dir, **overrides}.items() for part in (f"--{key}", str(value))]
    return [sys.executable, "-m", "agents.trainer", "--config", str(_preset_path(preset)), *flags]


def finished(out_dir: Path, steps: int | None) -> bool:
    """Whether ``out_dir/metrics.jsonl`` ends with step ``steps`` (None: any step > 0) and its held-out evaluation."""
    log = out_dir / "metrics.jsonl"
    if not log.is_file():
        return False
    lines = log.read_text().strip().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    step_ok = last.get("step") == steps if steps is not None else last.get("step", 0) > 0
    return step_ok and "eval/reward" in last


def run_overrides(preset: str, init: Path, rl_steps: int) -> dict[str, object]:
    """What the sweep sets in one preset's runs (docs/testbed.md, "Runs").

    An RL preset runs ``rl_steps`` RL steps from ``init``; a preset with ``phase: sft`` (continued
    SFT, the equal-CPU arm) keeps its own ``max_steps`` and ``max_cpu_minutes``; a preset that
    names ``init_from`` keeps its own start (e.g. the imperfect teacher's SFT start).
    """
    from agents.config import load_config

    config = load_config(str(_preset_path(preset)))
    if config.init_from and not (Path(config.init_from) / "config.json").is_file():
        raise FileNotFoundError(f"preset {preset}: its init_from {config.init_from} has no config.json "
                                "(train that start first: docs/testbed.md, 'Runs')")  # fmt: skip
    start = config.init_from or init
    if config.phase == "sft":
        return {"init_from": start}
    return {"phase": "rl", "sft_steps": 0, "init_from": start, "max_steps": rl_steps}


def _run(cmd: list[str], out_dir: Path, threads: int) -> tuple[Path, int, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    with open(out_dir / "train.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return out_dir, code, time.perf_counter() - start


def warm_start(args: argparse.Namespace, out: Path) -> Path:
    """The shared SFT checkpoint: ``--init-from`` or one trained now under ``out/sft``."""
    if args.init_from:
        if not (Path(args.init_from) / "config.json").is_file():
            raise FileNotFoundError(f"--init-from {args.init_from}: no config.json, not a policy checkpoint")
        return Path(args.init_from)
    from agents.config import load_config

    sft_dir = out / "sft"
    if (sft_dir / "config.json").is_file():
        return sft_dir
    lr = load_config(str(_preset_path("demo"))).sft_learning_rate
    overrides = {"phase": "sft", "max_steps": args.sft_steps, "learning_rate": lr, "seed": 0,
                 "eval_episodes": 0, "save_every": 0}  # fmt: skip
    print(f"SFT warm start: {args.sft_steps} steps -> {sft_dir}", flush=True)
    _, code, seconds = _run(train_command("demo", sft_dir, {**overrides, **args.set}), sft_dir,
                            max(args.threads, args.jobs))
    if code:
        raise RuntimeError(f"SFT warm start failed (exit {code}); see {sft_dir / 'train.log'}")
    print(f"SFT warm start: {seconds:.0f} s", flush=True)
    return sft_dir


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write the table; returns a process exit code."""
    args = parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        return _print_table(out, args)
    try:
        init = warm_start(args, out)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"lavida ablate: {exc}", file=sys.stderr)
        return 2
    runs = []
    for preset in args.presets:
        for seed in args.seeds:
            run_dir = out / preset / f"seed{seed}"
            overrides = {**run_overrides(preset, init, args.rl_steps), "seed": seed, "eval_every": 0,
                         "eval_episodes": args.eval_episodes, "save_every": 0}  # fmt: skip
            if not finished(run_dir, overrides.get("max_steps")):
                runs.append((train_command(preset, run_dir, {**overrides, **args.set}), run_dir))
    print(f"{len(runs)} runs to do ({args.jobs} at a time) under {out}", flush=True)
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        jobs = [pool.submit(_run, cmd, run_dir, args.threads) for cmd, run_dir in runs]
        for done, job in enumerate(jobs, 1):
            run_dir, code, seconds = job.result()
            failed += code != 0
            status = "ok" if code == 0 else f"FAILED (exit {code}, see {run_dir / 'train.log'})"
            print(f"[{done}/{len(runs)}] {run_dir.relative_to(out)}: {status} in {seconds:.0f} s", flush=True)
    return _print_table(out, args) or (1 if failed else 0)


def _print_table(out: Path, args: argparse.Namespace) -> int:
    from evaluation.ablation_table import write_table

    if not out.is_dir():
        print(f"lavida ablate: {out} does not exist; run the sweep first", file=sys.stderr)
        return 2
    from evaluation.ablation_table import earlier_runs

    try:
        earlier = earlier_runs(Path(args.merge)) if args.merge else None
    except ValueError as exc:
        print(f"lavida ablate: {exc}", file=sys.stderr)
        return 2
    table = write_table(out, args.presets, args.seeds, earlier)
    print("\n" + table.read_text() + "\n" + (out / "claims.md").read_text())
    print(f"Wrote {table}, {out / 'ablation.csv'}, {out / 'ablation.json'}, {out / 'claims.md'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
