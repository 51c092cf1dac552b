"""The frozen KL reference (``regularizer: kl``) under every accelerate backend: DDP, FSDP2, DeepSpeed ZeRO-3.

:func:`build_reference` returns the reference policy the trainer scores rollouts with:

* a LoRA policy (:mod:`agents.hf.lora`, a fresh adapter or one loaded by ``init_from``): the same
  model with the adapter switched off -- no second copy (TRL does the same with peft);
* DeepSpeed: the reference model goes through its own ``deepspeed.initialize`` in eval mode
  without optimizer (TRL's ``prepare_deepspeed``): ZeRO-3 partitions it like the policy, other
  stages hold a full copy per process (stage 0). Under ZeRO-3 with ``zero3_init_flag`` the
  reference is **rebuilt** from the run's spec (``rebuild()``: loaded again, so
  ``deepspeed.zero.Init`` partitions it while loading) rather than deep-copied, because
  partitioned parameters cannot be copied;
* FSDP2: ``fully_shard`` per accelerate's auto-wrap policy of the run (accelerate's own
  ``fsdp2_prepare_model``), so the reference is sharded like the policy;
* otherwise (one process, DDP, CPU/gloo): a deep copy, placed on the device with the run's mixed
  precision (``accelerator.prepare_model(..., evaluation_mode=True)``: no DDP wrapper, nothing to
  synchronise since it has no gradients).

* FSDP2 on CPU (``configs/accelerate/fsdp2_cpu.yaml``; accelerate would run it as DDP):
  :func:`shard_on_cpu` shards it with torch's ``fully_shard``, like the policy.

In every case the reference's parameters have ``requires_grad=False`` and its model is in eval
mode. :func:`sharded` says whether the run shards parameters across processes (FSDP, ZeRO-3, the
CPU FSDP2 seam): every process then makes the same forwards (:mod:`agents.collectives`).
:func:`run_info` is what ``run.json`` records; :func:`ignored_launch_warning` says when accelerate
ignored a sharding launch config.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any, Callable

import torch

__all__ = [
    "accumulation_plugin",
    "build_reference",
    "configure_deepspeed",
    "counted_module",
    "cpu_fsdp_requested",
    "fsdp2_root_fixups",
    "ignored_launch_warning",
    "run_info",
    "shard_on_cpu",
    "sharded",
    "split_launch_error",
    "zero_stage",
]

logger = logging.getLogger(__name__)


def zero_stage(accelerator: Any) -> int | None:
    """The DeepSpeed ZeRO stage of the run (None when it does not use DeepSpeed)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def sharded(accelerator: Any) -> bool:
    """Whether parameters are sharded across processes (FSDP, the CPU FSDP2 seam, DeepSpeed ZeRO-3), more than one process."""
    from accelerate.utils import DistributedType

    if accelerator.num_processes <= 1:
        return False
    return accelerator.distributed_type == DistributedType.FSDP or zero_stage(accelerator) == 3 or cpu_fsdp_requested(accelerator)


def _env_true(environ: Mapping[str, str], key: str) -> bool:
    return str(environ.get(key, "")).lower() in ("1", "true", "yes")


def accumulation_plugin(steps: int, environ: Mapping[str, str] | None = None) -> Any:
    """accelerate's ``GradientAccumulationPlugin`` for the trainer's micro-batches (no dataloader).

    Under FSDP (``ACCELERATE_USE_FSDP``) gradients are reduce-scattered after every micro-batch
    (``sync_each_batch``): FSDP2's ``no_sync`` keeps unsharded gradients that ``zero_grad`` cannot
    clear when a step is skipped.
    """
    from accelerate.utils import GradientAccumulationPlugin

    env = os.environ if environ is None else environ
    return GradientAccumulationPlugin(num_steps=int(steps), sync_with_dataloader=False,
                                      sync_each_batch=_env_true(env, "ACCELERATE_USE_FSDP"))  # fmt: skip


def cpu_fsdp_requested(accelerator: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the launch config asked for FSDP but accelerate runs it as DDP on CPU (``MULTI_CPU``)."""
    from accelerate.utils import DistributedType

    env = os.environ if environ is None else environ
    return _env_true(env, "ACCELERATE_USE_FSDP") and accelerator.distributed_type == DistributedType.MULTI_CPU


def ignored_launch_warning(accelerator: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """Why the run does not shard as its launch config asked (accelerate turned it into CPU DDP), or None."""
    from accelerate.utils import DistributedType

    env = os.environ if environ is None else environ
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return None
    if _env_true(env, "ACCELERATE_USE_DEEPSPEED"):
        return ("the accelerate config asks for DeepSpeed but accelerate runs this CPU launch as plain DDP (MULTI_CPU): "
                "nothing is partitioned and every process holds the whole model and optimizer; DeepSpeed needs a GPU "
                "launch (or DS_ACCELERATOR=cpu with deepspeed installed)")  # fmt: skip
    if _env_true(env, "ACCELERATE_USE_FSDP") and str(env.get("FSDP_VERSION", "1")) != "2":
        return ("the accelerate config asks for FSDP1 but accelerate runs this CPU launch as plain DDP (MULTI_CPU); "
                "the trainer shards CPU runs only with fsdp_version: 2 (configs/accelerate/fsdp2_cpu.yaml)")  # fmt: skip
    return None


def split_launch_error(world_size: int, environ: Mapping[str, str] | None = None) -> str | None:
    """Why this run must not start when the launcher started ``WORLD_SIZE`` > 1 processes that accelerate runs as
    independent single processes (an FSDP/DeepSpeed config on a host without GPU and without ``ACCELERATE_USE_CPU=1``)."""
    env = os.environ if environ is None else environ
    try:
        launched = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world_size > 1 or launched <= 1:
        return None
    return (f"the launcher started {launched} processes (WORLD_SIZE={launched}) but accelerate runs this one alone "
            "(num_processes 1), so each would train its own copy into the same output_dir; on a host without GPU set "
            "ACCELERATE_USE_CPU=1 (e.g. ACCELERATE_USE_CPU=1 accelerate launch --config_file "
            "configs/accelerate/fsdp2_cpu.yaml ...)")  # fmt: skip


def shard_on_cpu(accelerator: Any, model: torch.nn.Module, environ: Mapping[str, str] | None = None) -> str | None:
    """FSDP2 on CPU/gloo, which accelerate turns into DDP: ``fully_shard`` on every layer class of
    ``FSDP_TRANSFORMER_CLS_TO_WRAP``, then the root; returns ``"fsdp2-cpu"`` (None: nothing sharded here)."""
    env = os.environ if environ is None else environ
    if accelerator.num_processes <= 1 or not cpu_fsdp_requested(accelerator, env):
        return None
    if str(env.get("FSDP_VERSION", "1")) != "2":
        raise ValueError(f"FSDP_VERSION={env.get('FSDP_VERSION', '1')!r}: CPU runs shard with FSDP2 only; set "
                         "fsdp_version: 2 in the accelerate config (configs/accelerate/fsdp2_cpu.yaml)")  # fmt: skip
    from torch.distributed.fsdp import fully_shard

    names = {n.strip() for n in str(env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")).split(",") if n.strip()}
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if names and not layers:
        found = sorted({type(m).__name__ for m in model.modules() if "Layer" in type(m).__name__ or "Block" in type(m).__name__})
        raise ValueError(f"fsdp_transformer_layer_cls_to_wrap {sorted(names)} matches no module of "
                         f"{type(model).__name__} (its layer classes: {found}); set it in the accelerate config")  # fmt: skip
    reshard = _env_true(env, "FSDP_RESHARD_AFTER_FORWARD") or "FSDP_RESHARD_AFTER_FORWARD" not in env
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard)
    fully_shard(model)
    fsdp2_root_fixups(model)
    return "fsdp2-cpu"


def fsdp2_root_fixups(model: torch.nn.Module) -> None:
    """An FSDP2 root policy model: kept unsharded after forward (its output is a namespace, so no pre-backward hook
    could gather it again) and its KV-cache methods (which call the backbone directly) run under its hooks."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if not isinstance(model, FSDPModule):
        return
    model.set_reshard_after_forward(False, recurse=False)
    for method in ("_encode_with_cache", "_forward_window"):
        if callable(getattr(model, method, None)):
            register_fsdp_forward_method(model, method)


def counted_module(model: torch.nn.Module) -> torch.nn.Module:
    """The module every forward of a policy model runs through: its ``backbone`` (HF: the cache path skips the root)."""
    inner = getattr(model, "module", model)  # DDP
    backbone = getattr(inner, "backbone", None)
    return backbone if isinstance(backbone, torch.nn.Module) else inner


def run_info(accelerator: Any, sharding: str | None, gradient_accumulation_steps: int) -> dict[str, Any]:
    """What the run really ran with: world size, accelerate's distributed type, sharding, precision, accumulation."""
    return {"world_size": int(accelerator.num_processes), "distributed_type": str(accelerator.distributed_type.value),
            "sharded": sharded(accelerator), "sharding": sharding or ("zero3" if zero_stage(accelerator) == 3 else None),
            "zero_stage": zero_stage(accelerator), "mixed_precision": str(accelerator.mixed_precision),
            "gradient_accumulation_steps": int(gradient_accumulation_steps),
            "device": str(accelerator.device)}  # fmt: skip


def _deepspeed_frozen(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """``deepspeed.initialize`` of a frozen model for inference: ZeRO-3 partitions it, other stages run it at stage 0."""
    try:
        import deepspeed
    except ImportError as exc:
        raise ImportError(f"the run uses DeepSpeed but it is not importable ({exc}); pip install deepspeed") from None
    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    zero = config.setdefault("zero_optimization", {})
    hidden = getattr(getattr(model, "config", None), "hidden_size", None) or getattr(
        getattr(getattr(model, "backbone", None), "config", None), "hidden_size", None
    )
    if zero.get("stage", 0) == 3 and hidden:
        zero.update(reduce_bucket_size=hidden * hidden, stage3_param_persistence_threshold=10 * hidden,
                    stage3_prefetch_bucket_size=int(0.9 * hidden * hidden))  # fmt: skip
    for key in ("optimizer", "scheduler"):  # no optimizer is passed: training-only blocks go (as TRL/transformers do)
        config.pop(key, None)
    zero.pop("offload_optimizer", None)
    if zero.get("stage", 0) != 3:
        zero["stage"] = 0
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def _fsdp2_frozen(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """Shard a frozen model like the policy (accelerate's FSDP2 auto-wrap); FSDP1 wraps it in ``FullyShardedDataParallel``."""
    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) == 2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, model)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    plugin.set_auto_wrap_policy(model)
    return FSDP(model, sharding_strategy=plugin.sharding_strategy, auto_wrap_policy=plugin.auto_wrap_policy,
                mixed_precision=plugin.mixed_precision_policy, device_id=accelerator.device,
                use_orig_params=plugin.use_orig_params)  # fmt: skip


def build_reference(policy: Any, accelerator: Any, rebuild: Callable[[], Any] | None = None) -> Any:
    """The frozen reference policy of ``policy`` for this run's backend (module docstring); ``rebuild``: a fresh load."""
    from accelerate.utils import DistributedType

    from agents.hf.lora import adapter_disabled_reference

    reference = adapter_disabled_reference(policy)
    if reference is not None:
        return reference
    kind = accelerator.distributed_type
    zero3_init = zero_stage(accelerator) == 3 and accelerator.state.deepspeed_plugin.is_zero3_init_enabled()
    if zero3_init:
        if rebuild is None:
            raise ValueError(
                "regularizer 'kl' under DeepSpeed ZeRO-3 with zero3_init_flag needs a policy the trainer can load again "
                "from config.policy / init_from (a partitioned model cannot be deep-copied); pass no policy object to "
                "Trainer, or set zero3_init_flag: false in the accelerate config"
            )
        reference = rebuild()
    else:
        reference = copy.deepcopy(policy)
    model = reference.model.requires_grad_(False).eval()
    if kind == DistributedType.DEEPSPEED:
        model = _deepspeed_frozen(model, accelerator)
    elif kind == DistributedType.FSDP:
        model = _fsdp2_frozen(model, accelerator)
        fsdp2_root_fixups(model)
    elif cpu_fsdp_requested(accelerator) and accelerator.num_processes > 1:
        shard_on_cpu(accelerator, model)  # sharded like the policy (FSDP2 on CPU/gloo)
    else:
        model = accelerator.prepare_model(model, evaluation_mode=True)
        if model in accelerator._models:  # not part of accelerator.save_state: it never changes
            accelerator._models.remove(model)
    reference.model = model
    return reference


def configure_deepspeed(accelerator: Any, gradient_accumulation_steps: int, max_grad_norm: float) -> None:
    """Fill the DeepSpeed config before ``prepare``: the trainer's micro-batch accumulation and clipping norm.

    The trainer prepares no dataloader, so ``train_micro_batch_size_per_gpu`` (DeepSpeed's bookkeeping
    only) is set to 1 when it is ``auto``; ``gradient_accumulation_steps`` becomes the trainer's, so the
    engine steps once per trainer step (it divides the loss by it itself); ``gradient_clipping`` is
    ``max_grad_norm`` (0: off).
    """
    if zero_stage(accelerator) is None:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = 1
    config.pop("train_batch_size", None)
    config["gradient_accumulation_steps"] = int(gradient_accumulation_steps)
    config["gradient_clipping"] = float(max_grad_norm)
    accelerator.gradient_accumulation_steps = int(gradient_accumulation_steps)


def single_process_launch_warning(world_size: int, environ: Mapping[str, str] | None = None) -> str | None:
    """A warning when ``accelerate launch --num_processes N>1`` started this as its only process, else None.

    Accelerate's simple launcher (used without ``--multi_gpu`` when there is no GPU) sets
    ``MASTER_ADDR``/``MASTER_PORT`` when more than one process was asked for, but starts one
    process and sets no ``WORLD_SIZE``; a real multi-process launch sets ``WORLD_SIZE``.
    """
    env = os.environ if environ is None else environ
    from_accelerate = any(key.startswith("ACCELERATE_") for key in env)
    if world_size > 1 or "WORLD_SIZE" in env or "MASTER_ADDR" not in env or not from_accelerate:
        return None
    return (
        "accelerate launch was asked for several processes (MASTER_ADDR is set) but started only this one "
        "(no WORLD_SIZE): without a GPU, accelerate needs --multi_gpu to start several CPU processes, e.g. "
        "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 -m ...; "
        "continuing in ONE process (results record num_processes=1)"
    )
