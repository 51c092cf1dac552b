"""``lavida demo``: the LaViDa-R1 recipe on the learning testbed, end to end on CPU, under ``runs/demo/``.

The testbed (``docs/testbed.md``): VisualMath level 1 at 64 px with ``DiffusionPolicy.tiny``, from an
SFT start that is partly competent, so RL has room to work. Stages (each a plain call of the code
``lavida train`` / ``eval`` / ``leaderboard`` / ``plot`` run):

1. the SFT start: ``configs/testbed_sft.yaml`` stopped after ``sft_steps`` of its schedule;
2. from that start, at the same number of RL steps: the LaViDa-R1 recipe (``configs/testbed.yaml``)
   and the d1 preset (``configs/testbed_d1.yaml``); and continued SFT (``testbed_sft.yaml`` with
   ``init_from``) for ``more_sft_steps``, chosen so that its training CPU time matches the recipe's;
3. the AR baseline: its own SFT start (``testbed_sft.yaml`` with ``policy: ar``), then GRPO+KL
   (``configs/testbed_ar.yaml``) at the recipe's rollout budget;
4. ``lavida eval``, greedy, of every trained policy plus random and oracle on ``episodes`` held-out
   problems; ``lavida leaderboard`` -> ``leaderboard.{md,csv,png}``; ``lavida plot`` of every
   training run -> ``curves.png``.

``demo_timings.json`` holds every stage's wall and process CPU seconds (training alone, without the
held-out curve evaluations, under ``train_cpu_s``), the budget and the torch thread count
(``--threads``, default :func:`evaluation.runtime.default_threads`). Runs are seeded (``--seed``);
at a fixed thread count they repeat exactly. The AR track (its SFT start, then GRPO+KL) shares nothing with
the diffusion track, so with ``--jobs 2`` (the default where the cores hold two tracks at ``--threads``)
it runs in a second process beside it: the same results in about half the wall time on 2 cores.
``--quick`` runs the same stages at tiny budgets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agents.cli_args import ArgumentParser, at_least, nonempty
from evaluation.runtime import add_threads_argument, apply_threads

#: ``configs/`` of the source tree (the README installs the project editable).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ENV_ID = "LaViDa/VisualMath-v0"
ENV_KWARGS = "difficulty=1,image_size=64"


@dataclass(frozen=True)
class Budget:
    """How much work each stage does (optimizer steps, evaluation problems)."""

    sft_steps: int  # SFT start: steps run of configs/testbed_sft.yaml's schedule
    sft_schedule: int  # that schedule's length (its max_steps)
    rl_steps: int  # recipe, d1 and AR GRPO steps
    more_sft_steps: int  # continued SFT: matched to the recipe's training CPU time
    episodes: int  # held-out problems of the leaderboard's evaluation
    curve_episodes: int  # held-out problems of each point of the training curves
    sft_eval_every: int
    rl_eval_every: int


FULL = Budget(sft_steps=300, sft_schedule=600, rl_steps=30, more_sft_steps=200, episodes=200, curve_episodes=64,
              sft_eval_every=50, rl_eval_every=10)  # fmt: skip
QUICK = Budget(sft_steps=12, sft_schedule=24, rl_steps=3, more_sft_steps=3, episodes=16, curve_episodes=8,
               sft_eval_every=6, rl_eval_every=1)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="lavida demo",
        description="The LaViDa-R1 recipe on the learning testbed (VisualMath level 1, docs/testbed.md): an SFT "
        "start, then RL, continued SFT at equal CPU time, the d1 preset and an AR GRPO+KL baseline; greedy "
        "held-out evaluation with random and oracle, a leaderboard and training curves.",
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of the same stages")
    p.add_argument("--out", default="runs/demo", type=nonempty, help="output directory (default runs/demo)")
    for field in dataclasses.fields(Budget):
        flag = "--" + field.name.replace("_", "-")
        p.add_argument(flag, type=int, default=None, help=f"override the budget's {field.name} (full: {getattr(FULL, field.name)})")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of training and evaluation")
    p.add_argument("--force", action="store_true", help="start over even if OUT already holds results")
    add_threads_argument(p)
    p.add_argument("--jobs", type=at_least(1), default=None, metavar="N",
                   help="training tracks run at once, each in its own process: 2 runs the AR track beside the "
                   "diffusion track (default: 2 where the cores hold two tracks at --threads, else 1; Linux only)")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Budget]:
    """``(args, budget)`` of a ``lavida demo`` command line; bad values exit 2 with one line naming the flag."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args, budget_of(args)
    except ValueError as exc:
        parser.error(str(exc))


def budget_of(args: argparse.Namespace) -> Budget:
    """``FULL`` (or ``QUICK``) with the ``--FIELD`` overrides; bad values are a ``ValueError`` naming the flag."""
    base = QUICK if args.quick else FULL
    values = {f.name: getattr(args, f.name) if getattr(args, f.name) is not None else getattr(base, f.name)
              for f in dataclasses.fields(Budget)}  # fmt: skip
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if values["sft_steps"] > values["sft_schedule"]:
        raise ValueError(f"--sft-steps {values['sft_steps']} is past the schedule's end (--sft-schedule {values['sft_schedule']})")
    return Budget(**values)


def _config(config_file: str, **overrides: Any) -> Any:
    from agents.config import load_config

    path = CONFIG_DIR / config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run lavida demo from a source checkout (pip install -e .)")
    return load_config(str(path), **overrides)


def _train(config: Any, stop_at: int | None = None) -> dict[str, float]:
    """Train ``config`` (to ``stop_at`` steps of its schedule); its policy in ``output_dir``; eval CPU seconds."""
    from agents.trainer import Trainer

    class TimedTrainer(Trainer):  # the same loop; held-out curve evaluations timed apart from training
        eval_cpu = 0.0

        def evaluate(self) -> dict[str, float]:
            start = time.process_time()
            try:
                return super().evaluate()
            finally:
                TimedTrainer.eval_cpu += time.process_time() - start

    import shutil

    shutil.rmtree(config.output_dir, ignore_errors=True)  # a killed earlier try of this stage starts over
    trainer = TimedTrainer(config)
    trainer.train(stop_at=stop_at)
    if trainer.step < trainer.total_steps:  # stopped inside the schedule: keep the policy as the start
        trainer.save_policy(config.output_dir)
    return {"eval_cpu_s": TimedTrainer.eval_cpu}


def run_stage(name: str, fn: Callable[[], dict[str, float] | None], out: Path, announce: bool = True) -> dict[str, float]:
    """Run one stage, timed (wall, process CPU; training: also CPU without curve evaluations), unless done before.

    The timing is kept in ``out/stages/<name>.json``; a stage that has one is not run again, so a killed
    demo continues where it stopped (and stages may run in parallel processes on the same ``out``).
    """
    marker = out / "stages" / f"{_slug(name)}.json"
    if marker.is_file():
        row = json.loads(marker.read_text())
        if announce:
            print(f"=== {name}: done before ({row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} s CPU), kept", flush=True)
        return row
    print(f"\n=== {name}", flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    extra = fn() or {}
    row = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if "eval_cpu_s" in extra:
        row["train_cpu_s"] = row["cpu_s"] - extra["eval_cpu_s"]
    row = {k: round(v, 2) for k, v in {**row, **extra}.items()}
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(row))
    print(f"=== {name}: {row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} s CPU", flush=True)
    return row


def training_stages(out: Path, budget: Budget, seed: int) -> list[tuple[str, Callable[[], dict[str, float]]]]:
    """(stage name, run) of every training run, in order; each writes ``out/<run>/`` (policy + metrics.jsonl)."""
    b = budget
    common = {"seed": seed, "save_every": 0}
    sft_eval = {"eval_every": b.sft_eval_every, "eval_episodes": b.curve_episodes}
    rl = {"phase": "rl", "sft_steps": 0, "max_steps": b.rl_steps, "eval_every": b.rl_eval_every,
          "eval_episodes": b.curve_episodes, **common}  # fmt: skip
    start, ar_start = str(out / "sft_start"), str(out / "ar_sft_start")

    def sft(run: str, **kw: Any) -> Callable[[], dict[str, float]]:
        return lambda: _train(_config("testbed_sft.yaml", output_dir=str(out / run), max_steps=b.sft_schedule,
                                      **sft_eval, **common, **kw), stop_at=b.sft_steps)  # fmt: skip

    def run(preset: str, name: str, init: str, **kw: Any) -> Callable[[], dict[str, float]]:
        return lambda: _train(_config(preset, output_dir=str(out / name), init_from=init, **{**rl, **kw}))

    more = {**common, **sft_eval, "max_steps": b.more_sft_steps}
    return [
        (f"SFT start ({b.sft_steps} of {b.sft_schedule} scheduled steps)", sft("sft_start")),
        (f"lavida-r1 RL ({b.rl_steps} steps)", run("testbed.yaml", "lavida_r1", start)),
        (f"continued SFT ({b.more_sft_steps} steps)",
         lambda: _train(_config("testbed_sft.yaml", output_dir=str(out / "more_sft"), init_from=start, **more))),
        (f"d1 preset ({b.rl_steps} steps)", run("testbed_d1.yaml", "d1", start)),
        (f"AR SFT start ({b.sft_steps} of {b.sft_schedule} scheduled steps)", sft("ar_sft_start", policy="ar")),
        (f"AR GRPO+KL ({b.rl_steps} steps)", run("testbed_ar.yaml", "ar_grpo", ar_start)),
    ]


#: the training runs under OUT, in stage order
RUNS = ("sft_start", "lavida_r1", "more_sft", "d1", "ar_sft_start", "ar_grpo")
#: the stages (indices into :func:`training_stages`) of each independent track: diffusion, then AR
TRACKS = ((0, 1, 2, 3), (4, 5))


def default_jobs(requested: int | None, threads: dict[str, Any]) -> int:
    """Tracks run at once: ``--jobs``, else 2 where ``cores // threads >= 2`` on Linux (fork), else 1."""
    import sys

    if sys.platform != "linux":
        return 1  # the second track is a forked process
    if requested is not None:
        return min(requested, len(TRACKS))
    return 2 if threads["cores"] // max(1, threads["threads"]) >= 2 else 1


def _run_track(out: Path, budget: Budget, seed: int, track: tuple[int, ...]) -> None:
    """Run one track's stages in order (each skipped if its ``stages/`` marker says it is done)."""
    stages = training_stages(out, budget, seed)
    for i in track:
        run_stage(*stages[i], out)


def _track_process(out: Path, budget: Budget, seed: int, track: tuple[int, ...], log: Path) -> None:
    """A forked process's body: one track, its output in ``log`` (two trainers' progress bars would interleave)."""
    import os
    import sys

    stream = open(log, "w", buffering=1)  # noqa: SIM115 (the process's output until it exits)
    os.dup2(stream.fileno(), 1), os.dup2(stream.fileno(), 2)  # C-level writes too
    sys.stdout = sys.stderr = stream
    _run_track(out, budget, seed, track)
    stream.flush()


def run_training(out: Path, budget: Budget, seed: int, jobs: int) -> dict[str, dict[str, float]]:
    """Every training stage's timing row; with ``jobs >= 2`` the AR track runs in a second (forked) process.

    The tracks share nothing but ``out``: the AR runs start from their own SFT start, and every run is
    seeded, so the results are the same whichever way they run (only wall time differs).
    """
    if jobs >= 2:
        import multiprocessing

        log = out / "logs" / "ar_track.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"=== AR track (AR SFT start, AR GRPO+KL) in a second process; its log: {log}", flush=True)
        child = multiprocessing.get_context("fork").Process(target=_track_process, args=(out, budget, seed, TRACKS[1], log))
        child.start()
        try:
            _run_track(out, budget, seed, TRACKS[0])
        except BaseException:
            child.terminate()  # a failed or interrupted demo leaves no orphan trainer behind
            raise
        finally:
            child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"the AR track's process failed (exit code {child.exitcode}): see {log}")
    return {name: run_stage(name, fn, out, announce=jobs < 2) for name, fn in training_stages(out, budget, seed)}


TITLE = "lavida demo: VisualMath level 1 (continuations drawn from their start's last step)"


def curve_specs(out: Path, budget: Budget) -> list[str]:
    """``lavida plot`` arguments of every training run: continuations start where their SFT start stopped."""
    return [f"{out / run}={run}" + ("" if run.endswith("sft_start") else f"@{budget.sft_steps}") for run in RUNS]


def board_policies(out: Path, budget: Budget) -> dict[str, str]:
    """The leaderboard's rows: trained runs under ``out`` and the random / oracle references."""
    b = budget
    return {
        f"lavida-r1 (SFT start + {b.rl_steps} RL steps)": str(out / "lavida_r1"),
        f"continued SFT (SFT start + {b.more_sft_steps} SFT steps)": str(out / "more_sft"),
        f"d1 preset (SFT start + {b.rl_steps} RL steps)": str(out / "d1"),
        f"diffusion SFT start ({b.sft_steps} steps)": str(out / "sft_start"),
        f"AR GRPO+KL (AR SFT start + {b.rl_steps} RL steps)": str(out / "ar_grpo"),
        f"AR SFT start ({b.sft_steps} steps)": str(out / "ar_sft_start"),
        "random": "random",
        "oracle": "oracle",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns a process exit code."""
    args, budget = parse_args(argv)
    threads = apply_threads(args.threads)
    print(f"torch CPU threads: {threads['threads']} ({threads['source']}; {threads['cores']} cores)", flush=True)
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
    began = time.perf_counter()
    jobs = default_jobs(args.jobs, threads)
    timings = run_training(out, budget, args.seed, jobs)
    from evaluation import evaluate, leaderboard, plot

    eval_dirs = []
    for name, spec in board_policies(out, budget).items():
        target = out / "eval" / _slug(name)
        eval_dirs.append(str(target))
        argv_eval = [
            "--policy", spec, "--env", ENV_ID, "--env-kwargs", ENV_KWARGS, "--split", "test",
            "--episodes", str(budget.episodes), "--batch-size", "25", "--seed", str(args.seed), "--name", name,
            "--out", str(target), "--threads", str(threads["threads"]), "--no-progress",
        ]  # fmt: skip
        if target.exists():  # killed while evaluating: start that evaluation over
            argv_eval.append("--overwrite")
        timings[f"eval {name}"] = run_stage(f"eval {name}", lambda: _check(evaluate.main(argv_eval), "lavida eval"), out)  # noqa: B023
    board, curves = out / "leaderboard.md", out / "curves.png"
    for name, fn in (
        ("leaderboard", lambda: _check(leaderboard.main([*eval_dirs, "--out", str(board)]), "lavida leaderboard")),
        ("curves", lambda: _check(plot.main([*curve_specs(out, budget), "--out", str(curves), "--title", TITLE]), "lavida plot")),
    ):
        (out / "stages" / f"{name}.json").unlink(missing_ok=True)  # always redrawn from the evaluations
        timings[name] = run_stage(name, fn, out)
    total = time.perf_counter() - began
    record = {"budget": dataclasses.asdict(budget), "seed": args.seed, "threads": threads,
              "jobs": jobs, "total_wall_s": round(total, 1), "stages": timings}  # fmt: skip
    (out / "demo_timings.json").write_text(json.dumps(record, indent=2))
    print("\n" + board.read_text())
    print(f"Wrote {board}, {board.with_suffix('.csv')}, {board.with_suffix('.png')}, {curves} "
          f"and {out / 'demo_timings.json'} in {total / 60:.1f} min.")  # fmt: skip
    return 0


def _slug(name: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in name.lower()).split())


def _check(code: int, what: str) -> None:
    if code:
        raise RuntimeError(f"{what} failed with exit code {code}")


if __name__ == "__main__":
    raise SystemExit(main())
