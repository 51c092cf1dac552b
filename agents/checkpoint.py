"""Trainer checkpoints: everything a killed run needs to continue exactly (DESIGN section 5).

Layout of ``output_dir/checkpoint-STEP/``:

* the policy, by its own ``save_pretrained`` (so the folder is also a ``--policy`` spec for
  ``lavida eval``), written by the main process;
* ``trainer_state.pt`` (main process): ``step``, optimizer and scheduler ``state_dict``s,
  ``extra`` (the trainer's own state: collapse-alarm history, elapsed time, config);
* ``rank_state_<r>.pt`` (every process ``r``): Python, NumPy and torch global RNG states,
  the trainer's named ``numpy.random.Generator`` / ``torch.Generator`` states and ``local``
  (per-rank objects such as the rollout batch still being reused).

:func:`load_checkpoint` restores weights (``type(policy).from_pretrained`` then
``load_state_dict`` into the live, possibly DDP-wrapped, model), optimizer, scheduler and the
calling rank's RNGs; it raises ``FileNotFoundError`` naming the missing file.
"""

from __future__ import annotations

import os
import random
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["TRAINER_STATE", "checkpoint_dir", "load_checkpoint", "rank_state_file", "save_checkpoint"]

TRAINER_STATE = "trainer_state.pt"


def checkpoint_dir(output_dir: str, step: int) -> str:
    """``output_dir/checkpoint-STEP``."""
    return os.path.join(output_dir, f"checkpoint-{step}")


def rank_state_file(directory: str, rank: int) -> str:
    """Path of rank ``rank``'s RNG/local state in a checkpoint."""
    return os.path.join(directory, f"rank_state_{rank}.pt")


def _rng_states(generators: Mapping[str, Any]) -> dict[str, Any]:
    named = {}
    for name, gen in generators.items():
        named[name] = gen.get_state() if isinstance(gen, torch.Generator) else gen.bit_generator.state
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "named": named}


def _set_rng_states(states: dict[str, Any], generators: Mapping[str, Any], path: str) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    missing = sorted(set(generators) - set(states["named"]))
    if missing:
        raise ValueError(f"{path}: no saved state for generator(s) {missing}")
    for name, gen in generators.items():
        if isinstance(gen, torch.Generator):
            gen.set_state(states["named"][name])
        else:
            gen.bit_generator.state = states["named"][name]


def save_checkpoint(
    directory: str,
    *,
    accelerator: Any,
    policy: Any,
    optimizer: Any,
    scheduler: Any,
    step: int,
    generators: Mapping[str, Any],
    extra: dict[str, Any] | None = None,
    local: dict[str, Any] | None = None,
) -> str:
    """Write the checkpoint of ``step`` to ``directory`` (collective: every rank must call it)."""
    rank = accelerator.process_index
    if accelerator.is_main_process:
        os.makedirs(directory, exist_ok=True)
        policy.save_pretrained(directory)
        state = {"step": int(step), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "extra": dict(extra or {})}  # fmt: skip
        torch.save(state, os.path.join(directory, TRAINER_STATE))
    accelerator.wait_for_everyone()  # the folder exists before the other ranks write into it
    torch.save({**_rng_states(generators), "local": dict(local or {})}, rank_state_file(directory, rank))
    accelerator.wait_for_everyone()
    return directory


def load_checkpoint(
    directory: str,
    *,
    accelerator: Any,
    policy: Any,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    generators: Mapping[str, Any],
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Restore a checkpoint into the live objects; returns ``(step, extra, local)``."""
    rank = accelerator.process_index
    state_path, rank_path = os.path.join(directory, TRAINER_STATE), rank_state_file(directory, rank)
    for path in (state_path, rank_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: resume_from must be a checkpoint-STEP folder written by the trainer "
                f"with the same number of processes ({accelerator.num_processes})"
            )
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    saved = type(policy).from_pretrained(directory)
    accelerator.unwrap_model(model).load_state_dict(saved.model.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rank_state = torch.load(rank_path, map_location="cpu", weights_only=False)
    _set_rng_states(rank_state, generators, rank_path)
    return int(state["step"]), state.get("extra", {}), rank_state.get("local", {})
