"""One optimizer step per trainer step on every backend (docs/design.md, "Training"): DDP, FSDP2, DeepSpeed.

* :func:`micro_backward` -- the backward of one micro-batch inside ``accelerator.accumulate``
  (``boundary``: the step's last micro-batch). Under DeepSpeed the engine is driven directly
  (``set_gradient_accumulation_boundary`` + ``engine.backward``), because accelerate's
  ``backward`` would call ``engine.step()`` at the boundary before the trainer could check the
  gradients; the engine divides the loss by its accumulation steps itself.
* :func:`finish_step` -- after the last micro-batch: the gradient norm (clipped to
  ``max_grad_norm`` on DDP/FSDP; DeepSpeed clips inside its step), a non-finite flag all-reduced
  over the ranks so every rank decides alike, then exactly one optimizer/engine step -- or none
  when the norm is NaN/Inf anywhere -- and the gradients cleared on every backend
  (``zero_grad(set_to_none=True)``; DeepSpeed: engine and optimizer).
* :func:`clear_gradients` -- the clearing alone (a skipped step whose loss was non-finite).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["clear_gradients", "finish_step", "micro_backward"]


def _engine(model: Any) -> Any | None:
    """The DeepSpeed engine behind ``model`` (None on other backends)."""
    return model if callable(getattr(model, "set_gradient_accumulation_boundary", None)) else None


def micro_backward(accelerator: Any, model: Any, loss: torch.Tensor, boundary: bool) -> None:
    """Backward of one micro-batch; gradients accumulate until the ``boundary`` one (no optimizer step here)."""
    engine = _engine(model)
    if engine is not None:
        engine.set_gradient_accumulation_boundary(is_boundary=boundary)
        engine.backward(loss)
        return
    accelerator.backward(loss)  # divides by accelerator.gradient_accumulation_steps


def _any_rank(flag: bool, device: Any) -> bool:
    """Whether ``flag`` is True on any rank (a MAX all-reduce; the flag itself with one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _local_grads_finite(engine: Any) -> bool:
    """Whether this rank's part of the gradients (DeepSpeed ZeRO: its partition; stage 0: ``param.grad``) is finite."""
    stage = getattr(engine, "zero_optimization_stage", None)
    if callable(stage) and stage() > 0:
        from deepspeed.utils import safe_get_local_grad
    else:  # ZeRO stage 0 (or a stand-in engine): the parameters hold the gradients

        def safe_get_local_grad(param: torch.Tensor) -> torch.Tensor | None:
            return param.grad

    for param in engine.module.parameters():
        if param.requires_grad:
            grad = safe_get_local_grad(param)
            if grad is not None and not bool(torch.isfinite(grad).all()):
                return False
    return True


def _norm_value(norm: Any) -> float:
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor over the shards
        norm = norm.full_tensor()
    return float(norm)


def clear_gradients(model: Any, optimizer: Any) -> None:
    """Drop every accumulated gradient (parameters, optimizer, DeepSpeed partitions)."""
    engine = _engine(model)
    if engine is not None:
        engine.zero_grad()
        getattr(engine, "optimizer", optimizer).zero_grad(set_to_none=True)
    optimizer.zero_grad(set_to_none=True)
    for param in getattr(model, "parameters", lambda: [])():
        param.grad = None


def finish_step(accelerator: Any, model: Any, optimizer: Any, max_grad_norm: float) -> dict[str, Any]:
    """Clip, decide (all ranks alike) and take at most one optimizer step; ``{"grad_norm", "skipped"[, "warning"]}``."""
    engine = _engine(model)
    if engine is not None:
        finite = not _any_rank(not _local_grads_finite(engine), accelerator.device)
        norm = float("nan")
        if finite:
            engine.step()  # clips (gradient_clipping = max_grad_norm), steps, zeroes; once per trainer step
            value = engine.get_global_grad_norm()
            norm = float("nan") if value is None else float(value)
        else:
            clear_gradients(model, optimizer)
            scheduler = getattr(engine, "lr_scheduler", None)
            if scheduler is not None:  # the schedule follows the step count, updated or skipped
                scheduler.step()
    else:
        norm = _norm_value(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf")))
        finite = not _any_rank(not math.isfinite(norm), accelerator.device)
        if finite:
            optimizer.step()
        clear_gradients(model, optimizer)
    out: dict[str, Any] = {"grad_norm": norm, "skipped": 0.0 if finite else 1.0}
    if not finite:
        out["warning"] = "non-finite gradient norm: step skipped"
    return out
