"""LaViDa-R1 Gym environments: multimodal reasoning tasks with verifiable rewards.

``import lavida_envs`` registers every environment id below with Gymnasium, so
``gym.make("LaViDa/VisualMath-v0")`` works; ``gym.make("lavida_envs:LaViDa/VisualMath-v0")``
imports this module itself. This package never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

__version__ = "0.1.0"


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment: its id, the class that implements it and its task (None: a mixture)."""

    env_id: str
    entry_point: str
    task: str | None = None


#: Registration is data: every id this package provides.
ENVS: tuple[EnvEntry, ...] = (
    EnvEntry("LaViDa/VisualMath-v0", "lavida_envs.tasks.visual_math:VisualMathEnv", "visual_math"),
    EnvEntry("LaViDa/Grounding-v0", "lavida_envs.tasks.grounding:GroundingEnv", "grounding"),
    EnvEntry("LaViDa/ImageEdit-v0", "lavida_envs.tasks.image_edit:ImageEditEnv", "image_edit"),
    EnvEntry("LaViDa/MultiTask-v0", "lavida_envs.tasks.multitask:MultiTaskEnv"),
)
ENV_IDS: tuple[str, ...] = tuple(e.env_id for e in ENVS)
#: Task name -> the id of its single-task env (the trainer's task mixture is built from these).
TASK_ENV_IDS: dict[str, str] = {e.task: e.env_id for e in ENVS if e.task is not None}


def _register_all() -> None:
    for entry in ENVS:
        if entry.env_id not in gym.registry:
            gym.register(id=entry.env_id, entry_point=entry.entry_point)


_register_all()

__all__ = ["ENVS", "ENV_IDS", "TASK_ENV_IDS", "EnvEntry", "__version__"]
