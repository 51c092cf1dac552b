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

The SFT loss (``mean_b( -ELBO_b / n_b )``, :func:`agents.losses.sft_loss`) and the SFT loop are
the trainer's (``lavida train --phase sft`` / ``--env``; docs/design.md, "Training").
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Protocol

import gymnasium as gym
import numpy as np
import torch

from agents.diffusion.layout import ResponseLayout, task_of
from agents.diffusion.rows import RowBatch, assemble
from agents.diffusion.tokenizer import SpecialIds
from agents.policy import Rollouts

__all__ = ["SFTPolicy", "build_sft_batch", "image_hash", "reference_action", "sft_examples"]


class SFTPolicy(Protocol):
    """What :func:`build_sft_batch` reads of a policy (an ``agents.token_policy.TokenPolicy`` has it all)."""

    ids: SpecialIds
    codec: Any

    def layout(self, task: str) -> ResponseLayout: ...

    def text_ids(self, text: str) -> list[int]: ...

    def prompt_ids(self, observation: dict) -> list[int]: ...

    def pixel_values(self, observations: list[dict]) -> Any: ...


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


def build_sft_batch(policy: SFTPolicy, observations: list[dict], targets: list[str | dict]) -> Rollouts:
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
        response, cut = layout.target(ids, policy.text_ids(text), codes)
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
