"""Supervised fine-tuning of the diffusion policy on env reference solutions (masked-diffusion CE).

Contract:

* :func:`reference_action` -- the env's reference for one problem: ``info["solution"]``,
  plus the exact target image for image-edit problems (``problem.meta["target_image"]``)
  as ``{"text", "image"}``.
* :func:`sft_examples` -- ``(observation, target, image_hash)`` triples of an env id's
  split and difficulty from index ``start`` on, for any task mix (MultiTask included).
* :func:`build_sft_batch` -- a :class:`agents.policy.Rollouts` whose responses are the
  targets (text + ``<eos>`` padding to the task's text length, then ``<boi>`` codes
  ``<eoi>`` for image targets; the codes come from the policy's codec), so SFT samples and
  RL rollouts go through the same likelihood code and can share one batch.
* :func:`sft_loss` -- ``mean_b( -ELBO_b / n_b )`` where ``ELBO_b`` is the policy's
  ``log_likelihood`` estimate (default ``random_mask``: LLaDA's SFT objective, masked
  tokens' CE weighted 1/t) and ``n_b`` the number of response positions of row ``b``.
* :func:`train_sft` -- the quick SFT loop behind ``lavida train --phase sft`` (AdamW,
  warmup + cosine decay, seeded), returning the loss curve; :func:`quick_eval` -- greedy
  accuracy / reward / metrics on a split, with the count of test images equal to a
  training image.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np
import torch

from agents.diffusion.layout import task_of
from agents.diffusion.policy import DiffusionPolicy
from agents.diffusion.rows import RowBatch, assemble
from agents.policy import Rollouts

__all__ = [
    "SFTConfig",
    "build_sft_batch",
    "example_pool",
    "image_hash",
    "mixed_examples",
    "quick_eval",
    "reference_action",
    "sft_examples",
    "sft_loss",
    "train_sft",
]


def image_hash(image: np.ndarray) -> str:
    """A content hash of an image (to count train/test image overlap)."""
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=12).hexdigest()


def reference_action(env: gym.Env, info: dict) -> str | dict[str, Any]:
    """The reference action of the problem ``info`` describes (solution text, and target image)."""
    solution = info.get("solution")
    if not isinstance(solution, str):
        raise ValueError(f"env {env.spec.id if env.spec else env}: info['solution'] must be a str, got {solution!r}")
    base = env.unwrapped
    if getattr(base, "task_name", None) == "image_edit" or info.get("task") == "image_edit":
        index = info["index"]
        problem = base.problem(index) if hasattr(base, "problem") else None
        target = None if problem is None else problem.meta.get("target_image")
        if target is None:
            raise ValueError(f"image-edit problem {index} has no meta['target_image'] to supervise the image")
        return {"text": solution, "image": np.asarray(target, dtype=np.uint8)}
    return solution


def sft_examples(
    env_id: str, split: str = "train", difficulty: int | str = 1, start: int = 0, **env_kwargs: Any
) -> Iterator[tuple[dict, str | dict, str]]:
    """Endless ``(observation, reference action, image hash)`` for indices ``start, start+1, ...``."""
    env = gym.make(env_id, split=split, difficulty=difficulty, **env_kwargs)
    index = start
    while True:
        obs, info = env.reset(options={"index": index})
        yield obs, reference_action(env, info), image_hash(obs["image"])
        index += 1


def build_sft_batch(policy: DiffusionPolicy, observations: list[dict], targets: list[str | dict]) -> Rollouts:
    """Rollouts whose responses are the reference ``targets`` (one per observation)."""
    if len(observations) != len(targets):
        raise ValueError(f"got {len(observations)} observations but {len(targets)} targets")
    ids = policy.ids
    tasks = [task_of(obs) for obs in observations]
    layouts = [policy.layout(task) for task in tasks]
    responses, truncated = [], 0
    for target, layout in zip(targets, layouts):
        text = target["text"] if isinstance(target, dict) else target
        codes = None
        if layout.grid:
            image = target.get("image") if isinstance(target, dict) else None
            if image is None:
                raise ValueError("an image-task target must be {'text': str, 'image': uint8[H, W, 3]}")
            codes = policy.codec.encode(np.asarray(image, dtype=np.uint8))
        response, cut = layout.target(ids, policy.tokenizer(text, add_special_tokens=False)["input_ids"], codes)
        responses.append(response)
        truncated += int(cut)
    batch = RowBatch(prompts=[policy.prompt_ids(o) for o in observations], layouts=layouts, suffixes=[None] * len(targets))
    rollouts = assemble(batch, responses, [torch.zeros_like(r) for r in responses], ids)
    rollouts.unmask_step = None
    rollouts.texts = [t["text"] if isinstance(t, dict) else t for t in targets]
    rollouts.actions = list(targets)
    rollouts.pixel_values = policy.pixel_values(observations)
    rollouts.extras.update(task=tasks, truncated=truncated)
    return rollouts


def sft_loss(
    policy: DiffusionPolicy, batch: Rollouts, estimator: str = "random_mask", mask_seed: int = 0
) -> torch.Tensor:
    """Masked-diffusion SFT loss: mean over rows of the negative per-token ELBO estimate."""
    loglik = policy.log_likelihood(batch.to(policy.device), estimator, mask_seed)  # (B,)
    tokens = batch.response_mask.sum(1).clamp(min=1).to(loglik.device, loglik.dtype)
    return -(loglik / tokens).mean()


@dataclass
class SFTConfig:
    """Knobs of the quick SFT loop."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    estimator: str = "random_mask"
    seed: int = 0
    max_minutes: float | None = None  # stop early after this much wall time
    max_cpu_minutes: float | None = None  # stop early after this much process CPU time (all threads)
    log_every: int = 10
    grad_clip: float = 1.0
    history: list[dict[str, float]] = field(default_factory=list)


def _lr_factor(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_sft(
    policy: DiffusionPolicy,
    examples: Iterator[tuple[dict, str | dict, str]],
    cfg: SFTConfig,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> SFTConfig:
    """Run ``cfg.steps`` SFT steps on ``examples``; fills ``cfg.history`` with the loss curve.

    ``progress(step, metrics)`` is called after every step (e.g. a tqdm update).
    """
    torch.manual_seed(cfg.seed)
    model = policy.model
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg))
    start, cpu_start = time.time(), time.process_time()
    for step in range(cfg.steps):
        rows = [next(examples) for _ in range(cfg.batch_size)]
        batch = build_sft_batch(policy, [r[0] for r in rows], [r[1] for r in rows])
        loss = sft_loss(policy, batch, cfg.estimator, mask_seed=cfg.seed * 1_000_003 + step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SFT loss is {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        metrics = {
            "step": step + 1, "loss": loss.detach().item(), "lr": scheduler.get_last_lr()[0],
            "time": time.time() - start, "cpu_time": time.process_time() - cpu_start,
        }  # fmt: skip
        cfg.history.append(metrics)
        if progress is not None:
            progress(step + 1, metrics)
        if cfg.max_minutes is not None and metrics["time"] > 60 * cfg.max_minutes:
            break
        if cfg.max_cpu_minutes is not None and metrics["cpu_time"] > 60 * cfg.max_cpu_minutes:
            break
    model.eval()
    return cfg


def example_pool(
    stream: Iterator[tuple[dict, str | dict, str]], size: int, seed: int = 0
) -> Iterator[tuple[dict, str | dict, str]]:
    """Draw ``size`` examples from ``stream`` once, then yield uniform draws from them forever."""
    if size < 1:
        raise ValueError(f"pool size must be >= 1, got {size}")
    pool = [next(stream) for _ in range(size)]
    rng = np.random.default_rng(seed)
    while True:
        yield pool[int(rng.integers(size))]


def mixed_examples(streams: list[Iterator[tuple[dict, str | dict, str]]]) -> Iterator[tuple[dict, str | dict, str]]:
    """Round-robin over several example streams (an equal-weight task mix)."""
    while True:
        for stream in streams:
            yield next(stream)


def quick_eval(
    policy: DiffusionPolicy,
    env_id: str,
    difficulty: int | str = 1,
    split: str = "test",
    episodes: int = 100,
    batch_size: int = 16,
    train_hashes: set[str] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy, mean reward and mean metrics on problems ``0..episodes-1`` of a split.

    With ``train_hashes``, also counts the evaluated images identical to a training image.
    """
    env = gym.make(env_id, split=split, difficulty=difficulty)
    correct, rewards, overlap, metrics = [], [], 0, {}
    for begin in range(0, episodes, batch_size):
        pairs = [env.reset(options={"index": i}) for i in range(begin, min(episodes, begin + batch_size))]
        observations = [obs for obs, _ in pairs]
        actions = policy.act(observations)
        for (obs, reset_info), action in zip(pairs, actions):
            env.reset(options={"index": reset_info["index"]})
            _, reward, _, _, info = env.step(action[0])
            correct.append(bool(info["correct"]))
            rewards.append(float(reward))
            for name, value in info["metrics"].items():
                metrics.setdefault(name, []).append(float(value))
            overlap += int(train_hashes is not None and image_hash(obs["image"]) in train_hashes)
    result = {
        "env": env_id, "split": split, "difficulty": difficulty, "episodes": len(correct),
        "accuracy": float(np.mean(correct)) if correct else 0.0,
        "mean_reward": float(np.mean(rewards)) if rewards else 0.0,
        "metrics": {k: float(np.mean(v)) for k, v in metrics.items()},
    }  # fmt: skip
    if train_hashes is not None:
        result["test_images_equal_to_a_train_image"] = overlap
    return result
