"""A pickle-free encoding of trainer state (docs/design.md, "Training").

``torch.load(weights_only=True)`` accepts tensors and plain data only (None, bool, int, float,
str, bytes, list, tuple, set, dict). To fit that, :func:`encode_state` writes NumPy arrays and
scalars as ``{"__lavida__": "ndarray", dtype, shape, bytes}`` records and the dataclasses of
:data:`STATE_TYPES` as ``{"__lavida__": "dataclass", "type": name, "fields": {...}}``; each such
dataclass registers itself where it is defined, with the :func:`register_state_type` decorator
(``Rollouts``, ``GroupBatch``, ``Problem``, ``StepResult``, ``ForcingConfig``, ``TrainBatch``).
:func:`decode_state` rebuilds them by looking the name up in that allowlist, never by importing
it. Saving anything else raises ``TypeError`` naming the field; a bad record on load raises
:class:`CheckpointError` naming the file and field. :func:`load_state_file` reads one ``.pt`` file.

A leaf module: it imports nothing from the packages, so any module can register its dataclasses.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from typing import Any

import numpy as np
import torch

__all__ = ["STATE_TYPES", "CheckpointError", "decode_state", "encode_state", "load_state_file", "register_state_type"]

_TAG = "__lavida__"
FIX = "resume from another checkpoint-STEP folder, or start a new run (--init_from DIR loads just the weights)"

#: dataclasses a checkpoint may hold: name -> class (see :func:`register_state_type`)
STATE_TYPES: dict[str, type] = {}


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, not written by the trainer or does not fit the run."""


def register_state_type(cls: type) -> type:
    """Allow dataclass ``cls`` in checkpoints (usable as a decorator); its fields are encoded too."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass; only dataclasses can be registered as checkpoint state")
    STATE_TYPES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


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
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        if STATE_TYPES.get(name) is not type(value):
            raise TypeError(
                f"cannot checkpoint {where}: dataclass {name} is not allowed in checkpoints; "
                "decorate it with agents.state_codec.register_state_type"
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
            raise CheckpointError(f"{path}: field {where} is not a valid array record ({exc}); {FIX}") from None
        return array[()] if value.get("scalar") else array
    if kind == "dataclass":
        cls = STATE_TYPES.get(str(value.get("type")))
        if cls is None:
            raise CheckpointError(
                f"{path}: field {where} has type {value.get('type')!r}, which is not an allowed checkpoint type "
                f"(allowed: {sorted(STATE_TYPES)}); {FIX}"
            )
        saved = value.get("fields")
        known = {f.name: f for f in dataclasses.fields(cls)}
        if not isinstance(saved, dict) or set(saved) - set(known):
            extra = sorted(set(saved) - set(known)) if isinstance(saved, dict) else saved
            raise CheckpointError(f"{path}: field {where} ({cls.__name__}) has unknown fields {extra!r}; {FIX}")
        decoded = {k: decode_state(v, path, f"{where}.{k}") for k, v in saved.items()}
        try:
            obj = cls(**{k: v for k, v in decoded.items() if known[k].init})
        except TypeError as exc:
            raise CheckpointError(f"{path}: field {where} is not a valid {cls.__name__} ({exc}); {FIX}") from None
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
            raise CheckpointError(f"{path}: field {where} is not a valid {kind} record ({exc}); {FIX}") from None
    raise CheckpointError(f"{path}: field {where} is an unknown record {kind!r}; {FIX}")


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
        raise CheckpointError(f"{path}: cannot be read, it is truncated or corrupt (not a complete torch zip archive); {FIX}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in first:
            first = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), first)
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data ({first}), so it was not "
            f"written by this trainer (or by an older version, before weights-only checkpoints) or was tampered "
            f"with; nothing in it was run. {FIX}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(
            f"{path}: cannot be read, it is truncated or corrupt ({type(exc).__name__}: {str(exc).strip()[:200]}); "
            f"{FIX}"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a dict of trainer state; {FIX}")
    return decode_state(raw, path)
