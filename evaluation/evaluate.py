"""``lavida eval``: evaluate any policy spec on any env id and write ``results.json`` + ``samples.jsonl``.

Episodes are the env's problem indices ``start .. start+N-1`` of ``--split`` (for a
dataset-backed env at most its size), so every run sees the same problems. Observations
are batched ``--batch-size`` at a time into ``policy.act(observations, K)``; the K actions
are scored by :func:`lavida_envs.scoring.score_actions` (one ``env.reset(options={"index": i})``,
then ``env.step(action)`` each: the same as a fresh reset per action).
Rows are appended to ``samples.jsonl`` (flushed) as episodes finish, so ``--resume``
continues a killed run without redoing finished episodes; ``results.json`` is always
computed from the rows sorted by index, so it is the same whatever the batch size, the
number of processes or interruptions (only its ``run`` section -- wall time, argv, batch
size -- differs). Formats: :mod:`evaluation.results`.

Randomness: a policy whose ``act`` takes ``seeds=`` gets one seed per observation,
``stable_seed("lavida-eval", --seed, index)``, so its samples do not depend on which
episodes share a batch. A policy whose ``act`` takes ``seed=`` gets the seed of the
batch's first episode (then only a deterministic policy is batch-size independent). The
built-in random policy and the HF adapters seed per observation content, greedy decoding
is deterministic; a policy drawing one RNG stream per call with sampling on (e.g.
``DiffusionPolicy`` at temperature > 0) gives numbers that depend on ``--batch-size``.
A policy with ``prepare(env, indices)`` (the oracle) is prepared on its episodes first.

Several processes: ``accelerate launch --multi_gpu --num_processes W -m evaluation.evaluate
...`` (or ``torchrun --nproc_per_node W -m evaluation.evaluate ...``; on GPUs also plain
``accelerate launch``) gives rank r the episodes ``r, r+W, ...``; each rank appends to
``samples.part<r>.jsonl`` and rank 0 merges them into the same files a single process
writes. (``accelerate launch --cpu``, or ``--num_processes N`` without ``--multi_gpu`` on a
host without GPUs, starts ONE process: a warning says so, see
:func:`evaluation.runtime.single_process_launch_warning`.)

Output directory: ``--resume`` continues the run in ``--out`` (same arguments), ``--overwrite``
deletes its ``eval_config.json``, ``samples*.jsonl`` and ``results.json`` and starts over, and
without either an ``--out`` holding episodes or results is refused. ``eval_config.json`` is
written only once the env and policy have loaded, so a run that fails to start leaves nothing
behind (and a leftover config without episodes is not refused).

Decoding of a checkpoint: trained checkpoints save greedy decoding as their evaluation
default and keep the training decoding as ``training_decoding`` (:mod:`agents.eval_decoding`);
the eval prints which one it uses (and records it as ``policy.decoding_note``); ``--policy-kwargs
temperature=1.0`` evaluates as trained.

Threads: ``--threads N`` (default: ``$OMP_NUM_THREADS``, else ``min(4, cores // 2)``;
:mod:`evaluation.runtime`), recorded in ``results.json`` as ``run.threads``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from agents.cli_args import ArgumentParser, at_least, nonempty
from evaluation.results import (
    RESULTS_FILE,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    append_row,
    decoding_settings,
    describe_action,
    env_metadata,
    git_sha,
    jsonable,
    merge_rows,
    package_versions,
    read_rows,
    summarize_rows,
    summary_line,
    write_json,
    write_rows,
)
from evaluation.runtime import add_threads_argument, apply_threads, single_process_launch_warning

__all__ = ["build_parser", "evaluate_episodes", "main", "parse_kwargs", "parse_value", "score_episode"]

CONFIG_FILE = "eval_config.json"
KWARGS_HELP = (
    "comma-separated k=v pairs. Values: true/false -> bool, none/null -> None, integers -> int, "
    "other numbers -> float, {...} or [...] -> JSON, anything else -> str (quotes optional). A dotted key "
    "nests: grounding.box_format=norm1000 -> {'grounding': {'box_format': 'norm1000'}}. Repeatable."
)


# ----- command line ----------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A ``--env-kwargs`` value: bool, None, int, float, JSON object/list, or str."""
    s = text.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if s[:1] in "{[":
        try:
            return json.loads(s)
        except json.JSONDecodeError as exc:
            raise ValueError(f"value {s!r} looks like JSON but does not parse: {exc}") from None
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        depth += (ch in "{[") - (ch in "}]")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_kwargs(items: Sequence[str] | str | None) -> dict[str, Any]:
    """``["k=v,a.b=1", ...]`` -> ``{"k": "v", "a": {"b": 1}}`` (values by :func:`parse_value`)."""
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items or []:
        for pair in _split_top_level(item):
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"expected key=value, got {pair.strip()!r} (in {item!r})")
            *path, last = key.split(".")
            node = out
            for part in path:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"key {key!r} nests under {part!r}, which already has a value")
            node[last] = parse_value(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``lavida eval`` argument parser (bad values: one-line usage errors, agents.cli_args)."""
    p = ArgumentParser(
        prog="lavida eval",
        description="Evaluate a policy on an env's problems; write DIR/results.json and DIR/samples.jsonl.",
        epilog="example: lavida eval --policy oracle --env LaViDa/Grounding-v0 --episodes 50 --out runs/eval/oracle",
    )
    p.add_argument("--policy", required=True, type=nonempty, help="random | constant | oracle | hf:DIR | hf-vlm:DIR | "
                   "hf-dllm:DIR | CHECKPOINT_DIR | module:factory | path/to/file.py:factory")
    p.add_argument("--policy-kwargs", action="append", default=[], metavar="K=V,...", type=nonempty,
                   help="options for the policy constructor/factory; " + KWARGS_HELP)
    p.add_argument("--name", default=None, type=nonempty, help="policy name shown on leaderboards (default: the spec)")
    p.add_argument("--env", required=True, type=nonempty, help="env id, e.g. LaViDa/VisualMath-v0 (see lavida_envs.ENV_IDS)")
    p.add_argument("--env-kwargs", action="append", default=[], metavar="K=V,...", type=nonempty,
                   help="gym.make kwargs, e.g. difficulty=3,image_size=64; " + KWARGS_HELP)
    p.add_argument("--split", default="test", choices=["train", "test"], help="problem split (default test)")
    p.add_argument("--episodes", type=at_least(1), default=100,
                   help="problems to evaluate (default 100; capped at a dataset's size)")
    p.add_argument("--start-index", type=at_least(0), default=0, help="first problem index (default 0)")
    p.add_argument("--samples", type=at_least(1), default=1, help="actions per problem, K; K > 1 adds pass@k (default 1)")
    p.add_argument("--batch-size", type=at_least(1), default=8, help="observations per policy.act call (default 8)")
    p.add_argument("--seed", type=at_least(0), default=0, help="evaluation seed: per-episode policy seeds, bootstrap CIs")
    p.add_argument("--device", default=None, type=nonempty, help="move the policy's model here (e.g. cuda, cpu); default: leave it")
    p.add_argument("--out", required=True, type=nonempty, help="output directory")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue a killed run in --out (same arguments required)")
    again.add_argument("--overwrite", action="store_true",
                       help="start over in --out: delete its eval_config.json, samples*.jsonl and results.json first")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    add_threads_argument(p)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any], dict[str, Any]]:
    """``(args, env_kwargs, policy_kwargs)`` of a ``lavida eval`` command line; bad ones exit 2 (one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env_kwargs, policy_kwargs = parse_kwargs(args.env_kwargs), parse_kwargs(args.policy_kwargs)
    except ValueError as exc:
        parser.error(str(exc))
    if "split" in env_kwargs:
        parser.error("pass the split with --split, not in --env-kwargs")
    return args, env_kwargs, policy_kwargs


# ----- processes ---------------------------------------------------------------------------
@dataclass
class Dist:
    """This process's rank, the number of processes and a barrier."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None
    device: Any = None


def _dist() -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    device = state.device if state.device.type == "cuda" else None
    if device is not None:
        torch.cuda.set_device(device)
    return Dist(state.process_index, state.num_processes, state.wait_for_everyone, device)


# ----- one episode -------------------------------------------------------------------------
def _act(policy: Any, observations: list[dict], k: int, seeds: list[int]) -> list[list[Any]]:
    try:
        params = inspect.signature(policy.act).parameters
    except (TypeError, ValueError):  # no signature (builtins): plain call
        params = {}
    if "seeds" in params:
        out = policy.act(observations, k, seeds=seeds)
    elif "seed" in params:
        out = policy.act(observations, k, seed=seeds[0])
    else:
        out = policy.act(observations, k)
    if not isinstance(out, (list, tuple)) or len(out) != len(observations) or any(
        not isinstance(row, (list, tuple)) or len(row) != k for row in out
    ):
        shape = (
            [len(r) if isinstance(r, (list, tuple)) else type(r).__name__ for r in out]
            if isinstance(out, (list, tuple)) else type(out).__name__
        )
        raise ValueError(
            f"{type(policy).__name__}.act returned {shape}; expected {len(observations)} lists of {k} actions "
            "(outer list: observations, inner: samples)"
        )
    return [list(row) for row in out]


def score_episode(env: Any, index: int, actions: Sequence[Any]) -> dict[str, Any]:
    """Score the actions on problem ``index`` (:func:`lavida_envs.scoring.score_actions`); the episode's samples.jsonl row."""
    from lavida_envs.scoring import score_actions

    episode = score_actions(env, index, actions)
    task = episode.steps[-1].info.get("task") if episode.steps else None
    gold = env.unwrapped.problem(index).meta.get("box") if task == "grounding" else None
    samples = []
    for action, step in zip(actions, episode.steps):
        info = step.info
        sample = {
            "action": describe_action(action),
            "parsed": jsonable(info.get("parsed")),
            "reward": step.reward,
            "reward_components": jsonable(step.components),
            "correct": step.correct,
            "metrics": jsonable(info.get("metrics", {})),
            "error": info.get("error"),
        }
        if gold is not None:  # grounding rows carry both boxes (gIoU / cIoU in the summary)
            parsed = info.get("parsed")
            pred = parsed.get("grounding") if isinstance(parsed, Mapping) else parsed
            sample["box"] = {"pred": jsonable(pred), "gold": [float(v) for v in gold]}
        samples.append(sample)
    num_correct = sum(s["correct"] for s in samples)
    return {
        "index": int(index), "difficulty": episode.reset_info.get("difficulty"), "prompt": episode.observation["prompt"],
        "task": task, "reward": sum(s["reward"] for s in samples) / len(samples),
        "correct": num_correct / len(samples), "num_correct": int(num_correct), "samples": samples,
    }  # fmt: skip


def episode_seed(seed: int, index: int) -> int:
    """The per-episode seed handed to policies whose ``act`` takes ``seeds=``."""
    from lavida_envs.base import stable_seed

    return stable_seed("lavida-eval", int(seed), int(index)) % (2**63 - 1)


def evaluate_episodes(
    env: Any, policy: Any, indices: Sequence[int], samples: int, batch_size: int, seed: int,
    on_row: Callable[[dict[str, Any]], None], progress: Any = None,
) -> None:
    """Act on ``indices`` in batches and call ``on_row`` with each finished episode's row."""
    for start in range(0, len(indices), batch_size):
        batch = list(indices[start : start + batch_size])
        observations = [env.reset(options={"index": i})[0] for i in batch]
        actions = _act(policy, observations, samples, [episode_seed(seed, i) for i in batch])
        for index, row in zip(batch, actions):
            on_row(score_episode(env, index, row))
            if progress is not None:
                progress.update(1)


def _place(policy: Any, device: Any) -> None:
    target = policy if hasattr(policy, "to") else getattr(policy, "model", None)
    getattr(target, "to", lambda _: None)(device)


# ----- main ------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, env_kwargs: dict, policy_kwargs: dict) -> dict[str, Any]:
    return {
        "env": {"id": args.env, "kwargs": env_kwargs, "split": args.split},
        "policy": {"spec": args.policy, "kwargs": policy_kwargs, "name": args.name or args.policy},
        "episodes": {"start_index": args.start_index, "requested": args.episodes},
        "samples_per_episode": args.samples,
        "seed": args.seed,
    }


def _has_evaluation(out: Path) -> bool:
    """Whether ``out`` holds episodes or results (not just the config of a run that never started)."""
    return (out / RESULTS_FILE).is_file() or any(p.is_file() and p.stat().st_size for p in _sample_files(out))


def _check_out_dir(out: Path, config: dict[str, Any], resume: bool) -> str | None:
    path = out / CONFIG_FILE
    again = "pass --resume to continue it, --overwrite to start over, or use a new --out"
    if not path.is_file():
        if (out / SAMPLES_FILE).is_file():
            return f"{out} holds {SAMPLES_FILE} but no {CONFIG_FILE}; pass --overwrite to start over or use a new --out"
        return None
    if not resume:
        if not _has_evaluation(out):
            return None  # a run that failed before its first episode (e.g. the model did not load)
        return f"{out} already holds an evaluation ({CONFIG_FILE}); {again}"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"{path}: cannot read it ({exc}); pass --overwrite to start over or use a new --out"
    new = json.loads(json.dumps(config))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        detail = "; ".join(f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
        return (f"--resume in {out} needs the same arguments as the run it continues; differing: {detail} "
                "(--overwrite starts over with the new ones)")
    return None


def _clear_out_dir(out: Path) -> list[str]:
    """Delete the files of an earlier evaluation in ``out`` (``--overwrite``); their names."""
    paths = [out / CONFIG_FILE, out / RESULTS_FILE, *_sample_files(out)]
    paths += sorted(out.glob("*.jsonl.tmp")) if out.is_dir() else []
    removed = []
    for path in paths:
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def _checkpoint_decoding_note(spec: str, policy_kwargs: dict[str, Any]) -> str | None:
    """For a checkpoint spec: which decoding the eval uses (evaluation default, training, overrides)."""
    meta_path = Path(spec) / "policy_config.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("decoding"), dict):
        return None
    from agents.eval_decoding import describe_checkpoint_decoding

    overrides = {k: v for k, v in policy_kwargs.items() if k in meta["decoding"]}
    return describe_checkpoint_decoding(meta, overrides)


def _indices(env: Any, start: int, episodes: int) -> list[int]:
    size = env.unwrapped.num_problems()
    end = start + episodes if size is None else min(start + episodes, size)
    if size is not None and start >= size:
        raise ValueError(f"--start-index {start} is past the end of the dataset ({size} problems)")
    return list(range(start, end))


def _sample_files(out: Path) -> list[Path]:
    """samples.jsonl and the per-rank parts of a multi-process (or killed multi-process) run."""
    return [out / SAMPLES_FILE, *sorted(out.glob("samples.part*.jsonl"))] if out.is_dir() else []


class _Stop(Exception):
    """A refusal of ``lavida eval``: printed as ``lavida eval: MESSAGE``, exit status 2."""


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict, dict, dict]:
    """Arguments, ``--env-kwargs``, ``--policy-kwargs`` (:func:`parse_args`) and the threads applied."""
    args, env_kwargs, policy_kwargs = parse_args(argv)
    return args, env_kwargs, policy_kwargs, apply_threads(args.threads)


def _prepare_out(out: Path, config: dict[str, Any], args: argparse.Namespace, dist: Dist) -> set[int]:
    """Check (or with ``--overwrite`` clear) the output folder; the episode indices already done (every rank)."""
    problem = None if args.overwrite else _check_out_dir(out, config, args.resume)
    if problem:
        raise _Stop(problem)
    dist.barrier()
    if args.overwrite and dist.rank == 0:
        removed = _clear_out_dir(out)
        if removed:
            print(f"lavida eval: --overwrite: removed {', '.join(removed)} from {out}", file=sys.stderr)
    dist.barrier()
    try:
        done = {row["index"] for path in _sample_files(out) for row in read_rows(path)}
    except ValueError as exc:
        raise _Stop(str(exc)) from None
    dist.barrier()
    return done


def _load(args: argparse.Namespace, env_kwargs: dict, policy_kwargs: dict) -> tuple[Any, list[int], Any]:
    """The env, the episode indices to evaluate and the policy; a bad env, spec or folder is a :class:`_Stop`."""
    import gymnasium as gym

    import lavida_envs  # noqa: F401  (registers the ids)
    from baselines.specs import resolve_policy

    try:
        env = gym.make(args.env, split=args.split, disable_env_checker=True, **env_kwargs)
        indices = _indices(env, args.start_index, args.episodes)
        policy = resolve_policy(args.policy, **policy_kwargs)
    except (ValueError, TypeError, OSError, gym.error.Error) as exc:  # OSError: a missing or unreadable folder
        raise _Stop(f"{type(exc).__name__}: {exc}") from None
    return env, indices, policy


def _run(args: argparse.Namespace, env: Any, policy: Any, todo: list[int], dist: Dist, out: Path) -> None:
    """Evaluate this rank's episodes ``todo``, appending each row to its samples file as it finishes."""
    if args.device or dist.device is not None:
        _place(policy, args.device or dist.device)
    target = out / (SAMPLES_FILE if dist.world == 1 else f"samples.part{dist.rank}.jsonl")
    if target.is_file():
        write_rows(target, read_rows(target))  # drop a line cut off by a kill before appending
    if todo and hasattr(policy, "prepare"):
        policy.prepare(env, todo)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"eval {args.env}", unit="ep", disable=args.no_progress or dist.rank != 0)
    with open(target, "a", encoding="utf-8") as handle, bar:
        evaluate_episodes(env, policy, todo, args.samples, args.batch_size, args.seed,
                          lambda row: append_row(handle, row), bar)  # fmt: skip


def _report(out: Path, indices: list[int], extra: dict[str, Any], results_of: Callable[[list[dict]], dict]) -> int:
    """Rank 0: merge every rank's rows into samples.jsonl, write results.json and print the summary; 1 if any are missing."""
    rows = [r for r in merge_rows(*(read_rows(p) for p in _sample_files(out))) if r["index"] in set(indices)]
    missing = sorted(set(indices) - {r["index"] for r in rows})
    if missing:
        print(f"lavida eval: {len(missing)} episodes missing (first {missing[:5]}); rerun with --resume",
              file=sys.stderr)  # fmt: skip
        return 1
    write_rows(out / SAMPLES_FILE, rows)
    for path in _sample_files(out)[1:]:
        path.unlink()
    results = results_of(rows)
    results["run"]["threads"] = extra["threads"]
    if extra.get("decoding_note"):
        results["policy"]["decoding_note"] = extra["decoding_note"]
    write_json(out / RESULTS_FILE, results)
    print(summary_line(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``lavida eval`` with ``argv`` (parse, run, report); 0 on success, 2 on bad arguments."""
    t0 = time.time()
    args, env_kwargs, policy_kwargs, threads = _parse(argv)
    dist, out = _dist(), Path(args.out)
    warning = single_process_launch_warning(dist.world)
    if warning:
        print(f"lavida eval: warning: {warning}", file=sys.stderr)
    config = _config(args, env_kwargs, policy_kwargs)
    try:
        done = _prepare_out(out, config, args, dist)
        env, indices, policy = _load(args, env_kwargs, policy_kwargs)
    except _Stop as stop:
        print(f"lavida eval: {stop}", file=sys.stderr)
        return 2
    decoding_note = _checkpoint_decoding_note(args.policy, policy_kwargs)
    if decoding_note and dist.rank == 0:
        print(f"lavida eval: {decoding_note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    if dist.rank == 0:  # only once env and policy loaded: a failed load leaves nothing to refuse a rerun
        write_json(out / CONFIG_FILE, config)
    _run(args, env, policy, [i for i in indices[dist.rank :: dist.world] if i not in done], dist, out)
    dist.barrier()
    if dist.rank != 0:
        return 0
    results_of = lambda rows: _results(config, env, policy, rows, indices, args, dist, argv, t0, len(done))  # noqa: E731
    return _report(out, indices, {"threads": threads, "decoding_note": decoding_note}, results_of)


def _results(config, env, policy, rows, indices, args, dist, argv, t0, resumed) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "env": {**config["env"], **env_metadata(env)},
        "episodes": {**config["episodes"], "indices": [indices[0], indices[-1]] if indices else None},
        "policy": {**config["policy"], "class": f"{type(policy).__module__}.{type(policy).__qualname__}",
                   "decoding": decoding_settings(policy)},
        "samples_per_episode": args.samples,
        "seed": args.seed,
        **summarize_rows(rows, args.samples, seed=args.seed, prefix_task=env_metadata(env)["sub_versions"] is not None),
        "provenance": {"versions": package_versions(), "git_sha": git_sha(), "python": platform.python_version()},
        "run": {
            "argv": list(sys.argv[1:] if argv is None else argv),
            "wall_time_s": round(time.time() - t0, 3),
            "batch_size": args.batch_size,
            "num_processes": dist.world,
            "episodes_resumed": resumed,
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
