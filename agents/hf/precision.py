"""Precision of trainable backbones: fp32 master weights, the dtype checkpoints are saved in, exact resume.

A bf16 checkpoint loads in bf16, and AdamW on bf16 weights loses every update smaller than half a
bf16 step (~0.4% of a weight): at lr 5e-7 almost nothing trains. So the trainer holds trainable
parameters in ``model_dtype`` (``TrainConfig.model_dtype``, default ``float32``: the master copy;
``mixed_precision: bf16`` then computes in bf16 under autocast), and :func:`configure_precision`
warns when trainable parameters stay bf16/fp16 with no fp32 master.

Checkpoints save the backbone in ``save_dtype`` (``TrainConfig.save_dtype``; default ``auto``: the
dtype the backbone was loaded in, so an 8B bf16 checkpoint stays 16 GB and loads in transformers as
published). When that is lower than the master's precision, :func:`save_master` also writes the
trainable parameters as held (``master_weights.safetensors``) and :func:`load_master` puts them back
on load, so ``--resume_from`` (and evaluating a checkpoint) sees the exact weights trained.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["DTYPES", "MASTER_FILE", "configure_precision", "load_master", "save_dtype", "save_master", "write_config_dtype"]

MASTER_FILE = "master_weights.safetensors"
#: config names -> torch dtypes ("auto" is handled by the callers)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LOW = (torch.bfloat16, torch.float16)


def _floating(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.is_floating_point()]


def configure_precision(policy: Any, model_dtype: str = "float32", save: str = "auto", mixed_precision: str = "no") -> None:
    """Cast the trainable parameters of ``policy.model`` to ``model_dtype`` (``auto``: as loaded), record the
    save dtype (``auto``: the dtype as loaded), and warn when trainable parameters are bf16/fp16 (no fp32 master)."""
    model = policy.model
    params = _floating(model)
    if not params:
        return
    if getattr(model, "native_dtype", None) is None:  # the dtype the backbone came in (before any cast)
        model.native_dtype = params[0].dtype
    for name, value in (("model_dtype", model_dtype), ("save_dtype", save)):
        if value != "auto" and value not in DTYPES:
            raise ValueError(f"TrainConfig.{name} must be 'auto' or one of {sorted(DTYPES)}, got {value!r}")
    if model_dtype != "auto":
        with torch.no_grad():
            for p in params:
                if p.requires_grad and p.dtype != DTYPES[model_dtype]:
                    p.data = p.data.to(DTYPES[model_dtype])
    model.save_dtype = model.native_dtype if save == "auto" else DTYPES[save]
    low = sorted({str(p.dtype) for p in params if p.requires_grad and p.dtype in _LOW})
    if low:
        warnings.warn(
            f"{type(policy).__name__}: trainable parameters are {', '.join(low)} with no fp32 master copy: AdamW updates "
            f"smaller than that dtype's precision are lost (a bf16 weight moves only by steps of ~0.4%), so small "
            f"learning rates barely train; set model_dtype: float32 (the default; mixed_precision: bf16 "
            f"{'is on' if mixed_precision == 'bf16' else 'then'} computes in bf16)",
            stacklevel=2,
        )


def save_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype to save ``model``'s backbone in (None: as held)."""
    return getattr(model, "save_dtype", None)


def _name(name: str) -> str:
    """A parameter name without DDP / torch.compile wrapper prefixes."""
    for prefix in ("module.", "_orig_mod."):
        name = name.removeprefix(prefix)
    return name


def save_master(model: nn.Module, path: str, dtype: torch.dtype | None) -> None:
    """``path/master_weights.safetensors``: the trainable parameters whose dtype is not ``dtype`` (nothing if none)."""
    from safetensors.torch import save_file

    target = os.path.join(path, MASTER_FILE)
    master = {} if dtype is None else {_name(n): p.detach().cpu().contiguous() for n, p in model.named_parameters()
                                       if p.requires_grad and p.is_floating_point() and p.dtype != dtype}  # fmt: skip
    if master:
        save_file(master, target)
    elif os.path.exists(target):
        os.remove(target)


def load_master(model: nn.Module, path: str) -> None:
    """Put the parameters of ``path/master_weights.safetensors`` (if any) into ``model``, in their saved dtype."""
    from safetensors.torch import load_file

    target = os.path.join(path, MASTER_FILE)
    if not os.path.isfile(target):
        return
    try:
        master = load_file(target)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{target}: not a readable safetensors file ({exc}); delete it to load the saved weights as they are")
    params = {_name(n): p for n, p in model.named_parameters()}
    unknown = sorted(set(master) - set(params))
    if unknown:
        raise ValueError(f"{target}: parameters {unknown[:5]} are not in this model; the checkpoint was written by another model")
    with torch.no_grad():
        for name, value in master.items():
            p = params[name]
            if p.shape != value.shape:
                raise ValueError(f"{target}: {name} has shape {tuple(value.shape)}, the model's is {tuple(p.shape)}")
            p.data = value.to(p.device)


def write_config_dtype(path: str, dtype: torch.dtype) -> None:
    """Set the dtype field of ``path/config.json`` (``dtype`` or ``torch_dtype``) to ``dtype``."""
    file = os.path.join(path, "config.json")
    with open(file, encoding="utf-8") as f:
        config = json.load(f)
    key = "torch_dtype" if "torch_dtype" in config and "dtype" not in config else "dtype"
    config[key] = str(dtype).removeprefix("torch.")
    with open(file, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
