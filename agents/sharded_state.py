"""Full weights and per-rank optimizer state of FSDP2-sharded models (docs/design.md, "Training").

A model sharded with torch's ``fully_shard`` holds ``DTensor`` parameters: each rank has its shard.

* :func:`gathered_parameters` -- inside the block every sharded parameter is a full plain tensor on
  every rank (collective: all ranks enter it), so ``save_pretrained`` and ``state_dict`` see the
  whole model; the shards are put back afterwards. A no-op for unsharded models.
* :func:`gathered_for_rollouts` -- inside the block (rollouts, evaluation: no-grad forwards) the weights
  are gathered once and kept, not re-gathered by every denoising step: FSDP2 unshards every
  module and does not reshard after forward until the block ends; DeepSpeed ZeRO-3 runs the block
  in ``deepspeed.zero.GatheredParameters`` (as TRL's ``unwrap_model_for_generation``). Collective.
* :func:`load_full_state` -- a full (unsharded) state dict into a model, sharded or not
  (``torch.distributed.checkpoint.state_dict.set_model_state_dict`` for sharded ones).
* :func:`local_optimizer_state` / :func:`restore_optimizer_state` -- an optimizer's state with
  every ``DTensor`` as its local shard (plain tensors: what ``torch.load(weights_only=True)``
  reads), and back onto the parameters' meshes; saved per rank, so a resume with the same number
  of processes is exact.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

__all__ = [
    "gathered_for_rollouts",
    "gathered_parameters",
    "is_sharded",
    "load_full_state",
    "local_optimizer_state",
    "restore_optimizer_state",
]


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return None
    return DTensor


def is_sharded(model: Any) -> bool:
    """Whether ``model`` has ``DTensor`` (FSDP2-sharded) parameters."""
    dtensor = _dtensor_type()
    params = getattr(model, "parameters", None)
    return dtensor is not None and callable(params) and any(isinstance(p, dtensor) for p in params())


def _reshard(model: torch.nn.Module) -> None:
    """Every FSDP2 module back to its sharded parameters (a root left unsharded after a no-grad forward included)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextmanager
def gathered_parameters(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Full plain parameters on every rank inside the block (module docstring); tied parameters stay tied."""
    dtensor = _dtensor_type()
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    full: dict[int, torch.nn.Parameter] = {}
    if dtensor is not None:
        _reshard(model)
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if isinstance(param, dtensor):
                    if id(param) not in full:  # the same order on every rank: the all-gathers pair up
                        full[id(param)] = torch.nn.Parameter(param.full_tensor().detach(), requires_grad=param.requires_grad)
                    module._parameters[name] = full[id(param)]
                    swaps.append((module, name, param))
    try:
        yield model
    finally:
        for module, name, param in swaps:
            module._parameters[name] = param


@contextmanager
def gathered_for_rollouts(model: Any) -> Iterator[None]:
    """Weights gathered once for the block's forwards (module docstring); nothing happens for unsharded models."""
    if callable(getattr(model, "zero_optimization_partition_weights", None)) and model.zero_optimization_partition_weights():
        import deepspeed  # a ZeRO-3 engine

        with deepspeed.zero.GatheredParameters(list(model.module.parameters())):
            yield
        return
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        FSDPModule = ()  # noqa: N806
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)] if isinstance(model, torch.nn.Module) else []
    if not modules:
        yield
        return
    groups = [g for m in modules for g in m._get_fsdp_state()._fsdp_param_groups]
    kept = [(g, g.post_forward_mesh_info) for g in groups]  # each module's reshard_after_forward, restored below
    for group in groups:
        group.post_forward_mesh_info = None  # no reshard after forward inside the block
    try:
        for module in modules:
            module.unshard()  # one all-gather per module, in the same order on every rank
        yield
    finally:
        for group, info in kept:
            group.post_forward_mesh_info = info
        _reshard(model)


def load_full_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Load a full state dict into ``model``: sharded models through ``set_model_state_dict`` (each rank keeps its shard)."""
    if not is_sharded(model):
        model.load_state_dict(dict(state), strict=strict)
        return
    _reshard(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    result = set_model_state_dict(model, dict(state), options=StateDictOptions(full_state_dict=True, strict=strict))
    if strict and result is not None and (result.missing_keys or result.unexpected_keys):
        raise RuntimeError(f"missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}")


def _localise(value: Any) -> Any:
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(value, dtensor):
        return value.to_local().detach().clone()
    if isinstance(value, dict):
        return {k: _localise(v) for k, v in value.items()}
    return value


def local_optimizer_state(optimizer: Any) -> dict[str, Any]:
    """``optimizer.state_dict()`` with each ``DTensor`` as this rank's local shard."""
    return _localise(optimizer.state_dict())


def restore_optimizer_state(optimizer: Any, state: Mapping[str, Any]) -> None:
    """Load a :func:`local_optimizer_state` back: local shards become ``DTensor`` on their parameters' meshes."""
    optimizer.load_state_dict(dict(state))
    dtensor = _dtensor_type()
    if dtensor is None:
        return
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    for param, slots in inner.state.items():
        if not isinstance(param, dtensor):
            continue
        for key, value in list(slots.items()):
            if isinstance(value, torch.Tensor) and not isinstance(value, dtensor) and value.shape == param.to_local().shape:
                slots[key] = dtensor.from_local(value.to(param.device), param.device_mesh, param.placements, run_check=False,
                                                shape=param.shape, stride=param.stride())  # uneven shards: the global shape  # fmt: skip
