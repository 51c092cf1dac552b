"""Trainer checkpoints: everything a killed run needs to continue exactly (docs/design.md, "Training").

Layout of ``output_dir/checkpoint-STEP/``:

* the policy, by its own ``save_pretrained`` (so the folder is also a ``--policy`` spec for
  ``lavida eval``), written by the main process;
* ``trainer_state.pt`` (main process): ``format``, ``version``, ``step``, optimizer and
  scheduler ``state_dict``s, ``extra`` (the trainer's own state: collapse-alarm history,
  elapsed time, config);
* ``rank_state_<r>.pt`` (every process ``r``): Python, NumPy and torch global RNG states,
  the trainer's named ``numpy.random.Generator`` / ``torch.Generator`` states and ``local``
  (per-rank objects such as the rollout batch still being reused).

Sharded models (FSDP2, :mod:`agents.sharded_state`): the policy is saved from parameters gathered
on every rank (so the folder loads in one process like any other), and each rank's optimizer
shard goes into its ``rank_state_<r>.pt`` (``trainer_state.pt``'s optimizer field then says
``{"per_rank": True}``); loading puts each rank's shard of the saved weights back through
``set_model_state_dict`` and restores its own optimizer shard (same number of processes).

Nothing in a checkpoint is executed on load. Both ``.pt`` files are written and read by the
pickle-free state codec (:mod:`agents.state_codec`: ``torch.load(weights_only=True)``, tensors,
plain data and the registered dataclasses only); anything else is refused with a
:class:`CheckpointError` naming the file.

:func:`save_checkpoint` is atomic: every file goes into ``.checkpoint-STEP.partial`` next
to the target, which the main process renames to ``checkpoint-STEP`` once every rank has
written, so a killed save never leaves a folder that looks complete.

:func:`load_checkpoint` restores weights (``type(policy).from_pretrained`` then
``load_state_dict`` into the live, possibly DDP-wrapped, model), optimizer, scheduler and the
calling rank's RNGs; it raises ``FileNotFoundError`` naming a missing file and
:class:`CheckpointError` (a ``ValueError``) naming the file, field and fix for a truncated,
corrupt, foreign or mismatched one. :func:`agents.policy_files.check_policy_files` does the same
for the files of a saved policy (``config.json``, ``model.safetensors``, tokenizer JSON) before
they are loaded; it and the codec's names are re-exported here.
"""

from __future__ import annotations

import os
import random
import shutil
from functools import partial as partial_load
from typing import Any, Callable, Mapping

import numpy as np
import torch

from agents.sharded_state import gathered_parameters, is_sharded, load_full_state, local_optimizer_state, restore_optimizer_state

import agents.train_batch  # noqa: F401  (its import registers every state dataclass the trainer checkpoints)
from agents.policy_files import check_policy_files, require_code_trust
from agents.state_codec import (
    FIX as _FIX,
    STATE_TYPES,
    CheckpointError,
    decode_state,
    encode_state,
    load_state_file,
    register_state_type,
)

__all__ = [
    "STATE_FORMAT",
    "STATE_TYPES",
    "TRAINER_STATE",
    "CheckpointError",
    "check_policy_files",
    "checkpoint_dir",
    "decode_state",
    "encode_state",
    "load_checkpoint",
    "load_state_file",
    "rank_state_file",
    "register_state_type",
    "save_checkpoint",
]

TRAINER_STATE = "trainer_state.pt"
STATE_FORMAT, STATE_VERSION = "lavida-trainer-state", 2
PER_RANK = "per_rank"  # trainer_state.pt optimizer field of a sharded run: each rank state holds its shard


def checkpoint_dir(output_dir: str, step: int) -> str:
    """``output_dir/checkpoint-STEP``."""
    return os.path.join(output_dir, f"checkpoint-{step}")


def rank_state_file(directory: str, rank: int) -> str:
    """Path of rank ``rank``'s RNG/local state in a checkpoint."""
    return os.path.join(directory, f"rank_state_{rank}.pt")


def _partial_dir(directory: str, suffix: str = "partial") -> str:
    parent, name = os.path.split(os.path.normpath(directory))
    return os.path.join(parent, f".{name}.{suffix}")


# ----- RNG state ------------------------------------------------------------------------
def _rng_states(generators: Mapping[str, Any]) -> dict[str, Any]:
    named = {}
    for name, gen in generators.items():
        named[name] = gen.get_state() if isinstance(gen, torch.Generator) else gen.bit_generator.state
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "named": named}


def _restore(path: str, field: str, apply: Callable[[], Any]) -> None:
    try:
        apply()
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: field {field!r} is not a valid RNG state ({exc}); {_FIX}") from None


def _set_rng_states(states: dict[str, Any], generators: Mapping[str, Any], path: str) -> None:
    for key in ("python", "numpy", "torch", "named"):
        if key not in states:
            raise CheckpointError(f"{path}: missing field {key!r} (RNG state); {_FIX}")
    if not isinstance(states["named"], dict):
        raise CheckpointError(f"{path}: field 'named' is a {type(states['named']).__name__}, not a dict; {_FIX}")
    missing = sorted(set(generators) - set(states["named"]))
    if missing:
        raise CheckpointError(f"{path}: no saved state for generator(s) {missing}; {_FIX}")
    _restore(path, "python", lambda: random.setstate(states["python"]))
    _restore(path, "numpy", lambda: np.random.set_state(states["numpy"]))
    _restore(path, "torch", lambda: torch.set_rng_state(states["torch"]))
    for name, gen in generators.items():
        saved = states["named"][name]
        if isinstance(gen, torch.Generator):
            _restore(path, f"named.{name}", lambda gen=gen, saved=saved: gen.set_state(saved))
        else:
            _restore(path, f"named.{name}", lambda gen=gen, saved=saved: setattr(gen.bit_generator, "state", saved))


# ----- save and load --------------------------------------------------------------------
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
    """Write the checkpoint of ``step`` to ``directory`` atomically (collective: every rank must call it)."""
    rank, partial = accelerator.process_index, _partial_dir(directory)
    per_rank = is_sharded(policy.model)  # FSDP2: each rank's optimizer shard goes into its own rank state
    own = {"optimizer": local_optimizer_state(optimizer)} if per_rank else {}
    rank_state = encode_state({**_rng_states(generators), "local": dict(local or {}), **own}, f"rank {rank} state")
    optimizer_state = {PER_RANK: True} if per_rank else optimizer.state_dict()
    with gathered_parameters(policy.model):  # collective: the whole model on every rank, written once by main
        if accelerator.is_main_process:
            state = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step),
                     "optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "extra": dict(extra or {})}  # fmt: skip
            state = encode_state(state, "trainer state")
            shutil.rmtree(partial, ignore_errors=True)  # left by a save that was killed
            os.makedirs(partial)
            policy.save_pretrained(partial)
            torch.save(state, os.path.join(partial, TRAINER_STATE))
    accelerator.wait_for_everyone()  # the folder exists before the other ranks write into it
    torch.save(rank_state, rank_state_file(partial, rank))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = _partial_dir(directory, "old")
        if os.path.exists(directory):  # e.g. the same step saved again after a resume
            shutil.rmtree(old, ignore_errors=True)
            os.rename(directory, old)
        os.rename(partial, directory)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return directory


def _field(state: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    if key not in state:
        raise CheckpointError(f"{path}: missing field {key!r}; {_FIX}")
    if not isinstance(state[key], kind):
        raise CheckpointError(f"{path}: field {key!r} is {type(state[key]).__name__} {state[key]!r:.80}, not {kind}; {_FIX}")
    return state[key]


def load_checkpoint(
    directory: str,
    *,
    accelerator: Any,
    policy: Any,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    generators: Mapping[str, Any],
    trust_remote_code: bool = False,
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Restore a checkpoint into the live objects; returns ``(step, extra, local)``. A checkpoint carrying model
    code loads only with ``trust_remote_code`` (this command's ``--trust_remote_code``, never the policy's past)."""
    rank = accelerator.process_index
    state_path, rank_path = os.path.join(directory, TRAINER_STATE), rank_state_file(directory, rank)
    for path in (state_path, rank_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: resume_from must be a checkpoint-STEP folder written by the trainer "
                f"with the same number of processes ({accelerator.num_processes})"
            )
    state = load_state_file(state_path)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{state_path}: field 'format' is {state.get('format')!r}, not {STATE_FORMAT!r}; {_FIX}")
    step = _field(state, "step", int, state_path)
    if step < 0 or isinstance(step, bool):
        raise CheckpointError(f"{state_path}: field 'step' is {step!r}, not a step count; {_FIX}")
    rank_state = load_state_file(rank_path)  # read both before changing anything
    require_code_trust(directory, trust_remote_code, "--resume_from")
    try:
        trust = {"trust_remote_code": True} if trust_remote_code and getattr(policy, "remote_code", False) else {}
        saved = type(policy).from_pretrained(directory, **trust)
    except CheckpointError:
        raise
    except (ValueError, OSError) as exc:  # the policy's loaders name the file (check_policy_files, read_policy_meta)
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{directory}: cannot load the saved policy: {exc}") from None
    try:  # a sharded model keeps its shard of each full tensor (set_model_state_dict)
        load_full_state(accelerator.unwrap_model(model), saved.model.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(
            f"{directory}: the saved model does not fit this run's model ({str(exc).strip()[:300]}); resume with the "
            "config that wrote the checkpoint"
        ) from None
    for key, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        value, path, load = _field(state, key, dict, state_path), state_path, target.load_state_dict
        if key == "optimizer" and value.get(PER_RANK):  # a sharded run: this rank's shard of the optimizer state
            value, path, load = _field(rank_state, key, dict, rank_path), rank_path, partial_load(restore_optimizer_state, target)
        try:
            load(value)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"{path}: field {key!r} does not fit this run's {key} ({type(exc).__name__}: {exc}); resume with "
                "the config that wrote the checkpoint (and as many processes)"
            ) from None
    _set_rng_states(rank_state, generators, rank_path)
    extra = _field(state, "extra", dict, state_path) if "extra" in state else {}
    local = _field(rank_state, "local", dict, rank_path) if "local" in rank_state else {}
    return step, extra, local
