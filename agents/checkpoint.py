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

Nothing in a checkpoint is executed on load. Both ``.pt`` files are read with
``torch.load(weights_only=True)``, which accepts tensors and plain data only (None, bool,
int, float, str, bytes, list, tuple, set, dict); anything else is refused with a
:class:`CheckpointError` naming the file. To fit that, :func:`encode_state` writes NumPy
arrays and scalars as ``{"__lavida__": "ndarray", dtype, shape, bytes}`` records and the
dataclasses of :data:`STATE_TYPES` (``TrainBatch``, ``GroupBatch``, ``Rollouts``, ...;
:func:`register_state_type` adds one) as ``{"__lavida__": "dataclass", "type": name,
"fields": {...}}``; :func:`decode_state` rebuilds them by looking the name up in that
allowlist, never by importing it. Saving anything else raises ``TypeError`` naming the field.

:func:`save_checkpoint` is atomic: every file goes into ``.checkpoint-STEP.partial`` next
to the target, which the main process renames to ``checkpoint-STEP`` once every rank has
written, so a killed save never leaves a folder that looks complete.

:func:`load_checkpoint` restores weights (``type(policy).from_pretrained`` then
``load_state_dict`` into the live, possibly DDP-wrapped, model), optimizer, scheduler and the
calling rank's RNGs; it raises ``FileNotFoundError`` naming a missing file and
:class:`CheckpointError` (a ``ValueError``) naming the file, field and fix for a truncated,
corrupt, foreign or mismatched one. :func:`check_policy_files` does the same for the files of
a saved policy (``config.json``, ``model.safetensors``, tokenizer JSON) before they are loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
import zipfile
from typing import Any, Callable, Mapping

import numpy as np
import torch

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
_TAG = "__lavida__"
_FIX = "resume from another checkpoint-STEP folder, or start a new run (--init_from DIR loads just the weights)"

#: dataclasses a checkpoint may hold: name -> class (see :func:`register_state_type`)
STATE_TYPES: dict[str, type] = {}
_BUILTIN_TYPES_REGISTERED = False


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, not written by the trainer or does not fit the run."""


def checkpoint_dir(output_dir: str, step: int) -> str:
    """``output_dir/checkpoint-STEP``."""
    return os.path.join(output_dir, f"checkpoint-{step}")


def rank_state_file(directory: str, rank: int) -> str:
    """Path of rank ``rank``'s RNG/local state in a checkpoint."""
    return os.path.join(directory, f"rank_state_{rank}.pt")


def _partial_dir(directory: str, suffix: str = "partial") -> str:
    parent, name = os.path.split(os.path.normpath(directory))
    return os.path.join(parent, f".{name}.{suffix}")


# ----- a pickle-free encoding of trainer state ------------------------------------------
def register_state_type(cls: type) -> type:
    """Allow dataclass ``cls`` in checkpoints (usable as a decorator); its fields are encoded too."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass; only dataclasses can be registered as checkpoint state")
    STATE_TYPES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _register_builtin_types() -> None:
    global _BUILTIN_TYPES_REGISTERED
    if _BUILTIN_TYPES_REGISTERED:
        return
    _BUILTIN_TYPES_REGISTERED = True
    from agents.policy import Rollouts
    from agents.rollout import ForcingConfig, GroupBatch, Problem, StepResult
    from agents.train_batch import TrainBatch

    for cls in (Rollouts, GroupBatch, Problem, StepResult, ForcingConfig, TrainBatch):
        register_state_type(cls)


def encode_state(value: Any, where: str = "state") -> Any:
    """``value`` as tensors and plain data that ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.hasobject or array.dtype.kind == "V":
            raise TypeError(f"cannot checkpoint {where}: numpy dtype {array.dtype} (object/structured) is not plain data")
        return {_TAG: "ndarray", "dtype": array.dtype.str, "shape": list(array.shape),
                "data": np.ascontiguousarray(array).tobytes(), "scalar": isinstance(value, np.generic)}  # fmt: skip
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _register_builtin_types()
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        if STATE_TYPES.get(name) is not type(value):
            raise TypeError(
                f"cannot checkpoint {where}: dataclass {name} is not allowed in checkpoints; "
                "register it with agents.checkpoint.register_state_type"
            )
        fields = {f.name: encode_state(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
        return {_TAG: "dataclass", "type": name, "fields": fields}
    if isinstance(value, dict):
        items = {k: encode_state(v, f"{where}[{k!r}]") for k, v in value.items()}
        if _TAG in items:  # a real key that looks like our tag: store the items as pairs
            return {_TAG: "dict", "items": [[k, v] for k, v in items.items()]}
        return items
    if isinstance(value, tuple):
        return tuple(encode_state(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [encode_state(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return {_TAG: "set", "items": [encode_state(v, f"{where}{{}}") for v in value]}
    raise TypeError(
        f"cannot checkpoint {where}: {type(value).__module__}.{type(value).__qualname__} is not a tensor, numpy "
        "array, registered dataclass or plain data (None, bool, int, float, str, bytes, list, tuple, set, dict)"
    )


def _decode_record(value: dict, path: str, where: str) -> Any:
    kind = value[_TAG]
    if kind == "ndarray":
        try:
            dtype = np.dtype(str(value["dtype"]))
            if dtype.hasobject or dtype.kind == "V":
                raise ValueError(f"dtype {dtype} is not plain data")
            array = np.frombuffer(value["data"], dtype=dtype).reshape([int(n) for n in value["shape"]]).copy()
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: field {where} is not a valid array record ({exc}); {_FIX}") from None
        return array[()] if value.get("scalar") else array
    if kind == "dataclass":
        _register_builtin_types()
        cls = STATE_TYPES.get(str(value.get("type")))
        if cls is None:
            raise CheckpointError(
                f"{path}: field {where} has type {value.get('type')!r}, which is not an allowed checkpoint type "
                f"(allowed: {sorted(STATE_TYPES)}); {_FIX}"
            )
        saved = value.get("fields")
        known = {f.name: f for f in dataclasses.fields(cls)}
        if not isinstance(saved, dict) or set(saved) - set(known):
            extra = sorted(set(saved) - set(known)) if isinstance(saved, dict) else saved
            raise CheckpointError(f"{path}: field {where} ({cls.__name__}) has unknown fields {extra!r}; {_FIX}")
        decoded = {k: decode_state(v, path, f"{where}.{k}") for k, v in saved.items()}
        try:
            obj = cls(**{k: v for k, v in decoded.items() if known[k].init})
        except TypeError as exc:
            raise CheckpointError(f"{path}: field {where} is not a valid {cls.__name__} ({exc}); {_FIX}") from None
        for k, v in decoded.items():
            if not known[k].init:
                object.__setattr__(obj, k, v)
        return obj
    if kind in ("dict", "set") and isinstance(value.get("items"), list):
        try:
            if kind == "set":
                return {decode_state(v, path, f"{where}{{}}") for v in value["items"]}
            return {k: decode_state(v, path, f"{where}[{k!r}]") for k, v in value["items"]}
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{path}: field {where} is not a valid {kind} record ({exc}); {_FIX}") from None
    raise CheckpointError(f"{path}: field {where} is an unknown record {kind!r}; {_FIX}")


def decode_state(value: Any, path: str = "checkpoint", where: str = "state") -> Any:
    """Inverse of :func:`encode_state`; ``path``/``where`` name the file and field in errors."""
    if isinstance(value, dict):
        if _TAG in value:
            return _decode_record(value, path, where)
        return {k: decode_state(v, path, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(decode_state(v, path, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [decode_state(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def load_state_file(path: str) -> dict[str, Any]:
    """A ``.pt`` state file read with ``weights_only=True`` and decoded; never runs code from the file."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no central directory
        raise CheckpointError(f"{path}: cannot be read, it is truncated or corrupt (not a complete torch zip archive); {_FIX}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in first:
            first = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), first)
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data ({first}), so it was not "
            f"written by this trainer (or by an older version, before weights-only checkpoints) or was tampered "
            f"with; nothing in it was run. {_FIX}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(
            f"{path}: cannot be read, it is truncated or corrupt ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            f"{_FIX}"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a dict of trainer state; {_FIX}")
    return decode_state(raw, path)


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


# ----- policy files ---------------------------------------------------------------------
def check_policy_files(path: str) -> None:
    """Raise naming the file if a saved policy's ``config.json``, weights or tokenizer JSON is missing or cut off."""
    fix = "the checkpoint is truncated or corrupt: save the policy again or use another checkpoint"
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{config} not found: {path!r} is not a complete saved policy; {fix}")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                with open(file, encoding="utf-8") as f:
                    json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{file}: not valid JSON ({exc}); {fix}") from None
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({type(exc).__name__}: {exc}); {fix}") from None
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        shards = ["model.safetensors"]
    else:
        return  # other weight formats: left to the model's own loader
    from safetensors import SafetensorError, safe_open

    for shard in shards:
        file = os.path.join(path, shard)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file} not found (listed in {index}); {fix}")
        try:
            with safe_open(file, framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file}: not a complete safetensors file ({exc}); {fix}") from None


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
    rank_state = encode_state({**_rng_states(generators), "local": dict(local or {})}, f"rank {rank} state")
    if accelerator.is_main_process:
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "extra": dict(extra or {})}  # fmt: skip
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
    state = load_state_file(state_path)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{state_path}: field 'format' is {state.get('format')!r}, not {STATE_FORMAT!r}; {_FIX}")
    step = _field(state, "step", int, state_path)
    if step < 0 or isinstance(step, bool):
        raise CheckpointError(f"{state_path}: field 'step' is {step!r}, not a step count; {_FIX}")
    rank_state = load_state_file(rank_path)  # read both before changing anything
    try:
        trust = {"trust_remote_code": True} if getattr(policy, "remote_code", False) else {}  # the run already runs that code
        saved = type(policy).from_pretrained(directory, **trust)
    except CheckpointError:
        raise
    except (ValueError, OSError) as exc:  # the policy's loaders name the file (check_policy_files, read_policy_meta)
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{directory}: cannot load the saved policy: {exc}") from None
    try:
        accelerator.unwrap_model(model).load_state_dict(saved.model.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(
            f"{directory}: the saved model does not fit this run's model ({str(exc).strip()[:300]}); resume with the "
            "config that wrote the checkpoint"
        ) from None
    for key, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        value = _field(state, key, dict, state_path)
        try:
            target.load_state_dict(value)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"{state_path}: field {key!r} does not fit this run's {key} ({type(exc).__name__}: {exc}); resume with "
                "the config that wrote the checkpoint"
            ) from None
    _set_rng_states(rank_state, generators, rank_path)
    extra = _field(state, "extra", dict, state_path) if "extra" in state else {}
    local = _field(rank_state, "local", dict, rank_path) if "local" in rank_state else {}
    return step, extra, local
