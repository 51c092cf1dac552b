"""``lavida bench cache``: KV-cached diffusion rollouts on the real tasks, side by side in one run.

For each task (VisualMath, Grounding, ImageEdit at the demo's sizes: 64 px, text lengths 32 / 64
/ 192, 16 steps, blocks of 16) the same observations are decoded by one policy under every
setting -- ``cache`` none / prefix / dual at equal steps, and dual with threshold decoding -- and by
the AR baseline (``ARPolicy``, KV cache, about the same parameter count). Per setting it prints
response positions decoded per second, the ratio to ``cache=none``, model calls, the exact-match
rate of the decoded texts against ``cache=none`` (greedy), the mean env reward and the paired
reward difference to ``cache=none`` with a 95% interval. ``--policy DIR`` takes a trained
checkpoint (the interesting case for agreement and reward: a random model's tokens are noise);
``--policy hf-dllm:DIR`` measures a native LLaDA / Dream / LLaDA-V folder; the default is
``DiffusionPolicy.tiny``. Every ratio is also recorded for the ``lavida bench``
summary table. See docs/rollouts.md for the numbers measured on this project's machine.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from typing import Any

import gymnasium as gym
import torch

from agents.cli_args import ArgumentParser, at_least, in_range, nonempty

#: task -> (env id, text positions at the demo sizes)
TASKS: dict[str, tuple[str, int]] = {
    "visual_math": ("LaViDa/VisualMath-v0", 32),
    "grounding": ("LaViDa/Grounding-v0", 64),
    "image_edit": ("LaViDa/ImageEdit-v0", 192),
}


def settings(threshold: float) -> dict[str, dict[str, Any]]:
    """Setting name -> decoding overrides, the reference (``cache=none``) first."""
    return {
        "none": {"cache": "none"},
        "prefix": {"cache": "prefix"},
        "dual": {"cache": "dual"},
        f"dual + threshold {threshold}": {"cache": "dual", "threshold": threshold},
    }


def paired_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its normal 95% interval."""
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    half = 1.96 * math.sqrt(var / len(diffs))
    return mean, mean - half, mean + half


def rewards_of(env: gym.Env, indices: list[int], actions: list[Any]) -> list[float]:
    """Env reward of each action for its problem."""
    from lavida_envs.scoring import score_actions

    return [score_actions(env, i, [a]).steps[0].reward for i, a in zip(indices, actions)]


def timed(policy: Any, observations: list[dict], batch: int, repeats: int, seed: int):
    """Rollouts of all observations (in batches) and the best-of-``repeats`` seconds they took."""
    best, out = float("inf"), None
    for rep in range(repeats + 1):  # the first pass warms up
        started, parts = time.perf_counter(), []
        for i in range(0, len(observations), batch):
            parts.append(policy.rollout(observations[i : i + batch], 1, generator=torch.Generator().manual_seed(seed)))
        if rep:
            best = min(best, time.perf_counter() - started)
        out = parts
    return out, best


def load_policy(spec: str | None, image_size: int):
    """The diffusion policy to measure: any training spec (a checkpoint directory, ``hf-dllm:DIR``, ...) or a fresh tiny one."""
    from agents.diffusion.policy import DiffusionPolicy
    from agents.specs import trainable_policy

    if spec:
        return trainable_policy(spec)
    return DiffusionPolicy.tiny(seed=0, image_size=image_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """A ``lavida bench cache`` command line; bad values exit 2 with one line naming the flag."""
    parser = ArgumentParser(prog="lavida bench cache", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=None, type=nonempty, help="a training spec: checkpoint directory, hf-dllm:DIR "
                        "(native LLaDA, Dream, LLaDA-V), ... (default: a fresh DiffusionPolicy.tiny)")  # fmt: skip
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--episodes", type=at_least(1), default=16, help="test problems per task")
    parser.add_argument("--batch", type=at_least(1), default=8, help="observations per rollout call")
    parser.add_argument("--steps", type=at_least(1), default=16)
    parser.add_argument("--block-length", type=at_least(1), default=16)
    parser.add_argument("--threshold", type=in_range(0.0, 1.0, low_open=True), default=0.7)
    parser.add_argument("--image-size", type=at_least(8), default=64)
    parser.add_argument("--repeats", type=at_least(1), default=2, help="timed passes per setting (best is kept)")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch CPU threads (1 avoids oversubscription)")
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument("--no-ar", action="store_true", help="skip the autoregressive baseline")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time every cache setting (and the AR baseline) on each task; print and record the ratios."""
    from agents.autoregressive.policy import ARPolicy
    from evaluation.throughput import record

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import lavida_envs  # noqa: F401  (registers the ids)

    policy = load_policy(args.policy, args.image_size)
    base = replace(policy.decoding, temperature=0.0, steps=args.steps, block_length=args.block_length, threshold=None)
    ar = None if args.no_ar else ARPolicy.tiny(seed=0, image_size=policy.model.config.image_size)
    params = sum(p.numel() for p in policy.model.parameters()) / 1e6
    ar_params = 0.0 if ar is None else sum(p.numel() for p in ar.model.parameters()) / 1e6
    print(f"policy={args.policy or 'DiffusionPolicy.tiny'} ({params:.2f}M) AR={ar_params:.2f}M steps={args.steps} "
          f"block_length={args.block_length} episodes={args.episodes} batch={args.batch} threads={args.threads}")
    header = f"{'task':12s} {'setting':24s} {'pos/s':>8s} {'vs none':>8s} {'calls':>6s} {'same':>5s} {'reward':>7s}  reward - none [95% CI]"
    print(header)
    for task in args.tasks:
        env_id, text_length = TASKS[task]
        env = gym.make(env_id, split="test", difficulty=1, image_size=args.image_size)
        indices = list(range(args.episodes))
        observations = [env.reset(options={"index": i})[0] for i in indices]
        lengths = {**base.task_gen_length, task: text_length}
        reference = None
        for name, overrides in settings(args.threshold).items():
            policy.decoding = replace(base, task_gen_length=lengths, **overrides).validate()
            parts, seconds = timed(policy, observations, args.batch, args.repeats, args.seed)
            texts = [t for p in parts for t in p.texts]
            positions = sum(int(p.response_mask.sum()) for p in parts)
            calls = sum(int(p.extras.get("nfe", 0)) for p in parts)
            rewards = rewards_of(env, indices, [a for p in parts for a in p.actions])
            rate = positions / seconds
            if reference is None:
                reference = (rate, texts, rewards)
            same = sum(a == b for a, b in zip(texts, reference[1])) / len(texts)
            diff, lo, hi = paired_ci(rewards, reference[2])
            print(f"{task:12s} {name:24s} {rate:8.0f} {rate / reference[0]:7.2f}x {calls:6d} {same:5.2f} "
                  f"{sum(rewards) / len(rewards):7.3f}  {diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
            if name != "none":
                record("cache", f"{task} {name} positions/s", rate, "/s", rate / reference[0], "cache=none")
        if ar is not None:
            ar.decoding = replace(ar.decoding, temperature=0.0, task_gen_length=lengths)
            parts, seconds = timed(ar, observations, args.batch, args.repeats, args.seed)
            positions = sum(int(p.response_mask.sum()) for p in parts)
            rate = positions / seconds
            print(f"{task:12s} {'AR, KV cache':24s} {rate:8.0f} {rate / reference[0]:7.2f}x")
            record("cache", f"{task} AR KV cache positions/s", rate, "/s", rate / reference[0], "diffusion cache=none")
        env.close()
    print("pos/s = response positions decoded per second; same = decoded text equal to cache=none's (greedy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
