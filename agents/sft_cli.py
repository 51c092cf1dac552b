"""``lavida train --phase sft --env ...``: the quick stand-alone SFT command (``agents.trainer`` dispatches here).

``agents.trainer.main`` sends ``lavida train`` here when its arguments use this command's
flags (``--env``, ``--steps``, ``--batch-size``, ``--lr``, ...; see :data:`LEGACY_FLAGS`) and
no ``--config``; every other ``lavida train`` runs the config-based LaViDa-R1 trainer.

``lavida train --phase sft --env LaViDa/VisualMath-v0 --difficulty 1 --steps N --output-dir DIR``
trains a fresh ``DiffusionPolicy.tiny`` (or ``--init CHECKPOINT``) with the masked-diffusion
SFT loss of :mod:`agents.sft` on the envs' reference solutions (several ``--env`` mix
equally), shows a tqdm bar, then writes ``DIR/`` (the policy checkpoint),
``DIR/sft_log.jsonl`` (loss curve) and ``DIR/sft_summary.json`` (settings, wall time, number
of distinct training images and, with ``--eval-episodes``, greedy test accuracy per env and
how many test images equal a training image).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import torch
from tqdm import tqdm

from agents.diffusion.policy import DiffusionPolicy
from agents.sft import SFTConfig, example_pool, mixed_examples, quick_eval, sft_examples, train_sft

#: Flags only this command has: their presence (without --config) selects it.
LEGACY_FLAGS: tuple[str, ...] = (
    "--env", "--steps", "--batch-size", "--lr", "--estimator", "--max-minutes", "--max-cpu-minutes",
    "--init", "--gen-length", "--pool-size", "--threads",
)  # fmt: skip


def is_legacy(argv: list[str]) -> bool:
    """Whether ``argv`` is for this SFT command (a legacy flag, no ``--config``)."""
    names = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return "--config" not in names and bool(names & set(LEGACY_FLAGS))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lavida train", description="Quick SFT of a DiffusionPolicy (the full trainer: --config).")
    p.add_argument("--phase", choices=["sft"], default="sft", help="training phase (RL: lavida train --config FILE.yaml)")
    p.add_argument("--env", action="append", help="env id (repeat for an equal mix)")
    p.add_argument("--difficulty", default="1", help="difficulty level or 'mixed'")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--estimator", default="random_mask", choices=["random_mask", "complementary", "mean_field"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--max-cpu-minutes", type=float, default=None, help="stop after this much process CPU time")
    p.add_argument("--init", default=None, help="start from this DiffusionPolicy checkpoint")
    p.add_argument("--gen-length", type=int, default=None, help="text response length of the trained envs' tasks (default: the policy's)")
    p.add_argument("--pool-size", type=int, default=0, help="pre-render this many examples per env and resample them (0: stream)")
    p.add_argument("--eval-episodes", type=int, default=0, help="greedy test episodes per env after training")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output-dir", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run ``lavida train --phase sft --env ...``; returns a process exit code."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    envs = args.env or ["LaViDa/VisualMath-v0"]
    difficulty = args.difficulty if args.difficulty == "mixed" else int(args.difficulty)
    policy = DiffusionPolicy.from_pretrained(args.init) if args.init else DiffusionPolicy.tiny(seed=args.seed)
    if args.gen_length:  # the default length and that of each trained env's own task
        policy.decoding.gen_length = args.gen_length
        for env_id in envs:
            task = getattr(gym.make(env_id).unwrapped, "task_name", None)
            if task in policy.decoding.task_gen_length:
                policy.decoding.task_gen_length[task] = args.gen_length
        policy.decoding.validate()
    seen: set[str] = set()
    streams = [sft_examples(env, "train", difficulty) for env in envs]
    if args.pool_size:
        streams = [example_pool(s, args.pool_size, args.seed + i) for i, s in enumerate(streams)]

    def tracked():
        for obs, target, digest in mixed_examples(streams):
            seen.add(digest)
            yield obs, target, digest

    cfg = SFTConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        estimator=args.estimator, seed=args.seed, max_minutes=args.max_minutes,
        max_cpu_minutes=args.max_cpu_minutes,
    )  # fmt: skip
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    with tqdm(total=cfg.steps, desc="sft", unit="step") as bar, open(
        os.path.join(args.output_dir, "sft_log.jsonl"), "w", encoding="utf-8"
    ) as log:

        def progress(step: int, metrics: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            log.write(json.dumps(metrics) + "\n")
            log.flush()

        train_sft(policy, tracked(), cfg, progress)
    train_time = time.time() - start
    policy.save_pretrained(args.output_dir)
    summary = {
        "phase": "sft", "envs": envs, "difficulty": difficulty, "steps_done": len(cfg.history),
        "examples_seen": len(cfg.history) * cfg.batch_size, "distinct_train_images": len(seen),
        "train_seconds": round(train_time, 1),
        "train_cpu_seconds": round(cfg.history[-1]["cpu_time"], 1) if cfg.history else 0.0, "final_loss": cfg.history[-1]["loss"] if cfg.history else None,
        "lr": cfg.lr, "batch_size": cfg.batch_size, "estimator": cfg.estimator, "seed": cfg.seed,
        "decoding": policy.decoding_settings(),
        "parameters": sum(p.numel() for p in policy.model.parameters()),
    }  # fmt: skip
    if args.eval_episodes:
        summary["eval"] = [
            quick_eval(policy, env, difficulty, "test", args.eval_episodes, train_hashes=seen) for env in envs
        ]
        for result in summary["eval"]:
            print(
                f"{result['env']} test: accuracy {result['accuracy']:.3f} over {result['episodes']} episodes; "
                f"test images equal to a train image: {result['test_images_equal_to_a_train_image']}"
            )
    with open(os.path.join(args.output_dir, "sft_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(f"saved policy and logs to {args.output_dir} ({train_time:.0f}s of training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
