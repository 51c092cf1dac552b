"""configs/accelerate/*.yaml fit the installed accelerate's schema; DeepSpeed fill-in and reference errors (agents.distributed)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from agents.config import load_config
from agents.distributed import build_reference, configure_deepspeed, sharded, zero_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "accelerate")


@pytest.mark.parametrize(
    "name, kind", [("ddp", DistributedType.MULTI_GPU), ("fsdp2", DistributedType.FSDP), ("zero3", DistributedType.DEEPSPEED)]
)
def test_accelerate_configs_load_with_the_installed_schema(name, kind):
    config = load_config_from_file(os.path.join(CONFIGS, f"{name}.yaml"))
    assert config.distributed_type == kind and config.num_processes == 8 and config.mixed_precision == "bf16"
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_init_flag"] is True


def test_fsdp2_config_builds_accelerates_fsdp2_plugin(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", os.path.join(CONFIGS, "fsdp2.yaml"), "-m", "agents.trainer"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])  # what accelerate launch exports
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["Qwen2DecoderLayer"]


def test_paper_scale_8b_yaml_names_an_hf_multimodal_spec():
    config = load_config(os.path.join(ROOT, "configs", "paper_scale_8b_vlm.yaml"))
    assert config.policy.startswith("hf-vlm-dllm:") and config.mixed_precision == "bf16" and config.gradient_checkpointing
    assert config.max_steps == 5000 and config.likelihood == "complementary"  # paper_scale.yaml's recipe underneath


def fake_deepspeed(stage: int, **ds: object) -> SimpleNamespace:
    """An accelerator-shaped object of a DeepSpeed run (what agents.distributed reads)."""
    plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": stage}, **ds}, is_zero3_init_enabled=lambda: True)
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=8, gradient_accumulation_steps=1,
                           state=SimpleNamespace(deepspeed_plugin=plugin))  # fmt: skip


def test_configure_deepspeed_fills_the_trainers_accumulation_and_clipping():
    acc = fake_deepspeed(3, train_micro_batch_size_per_gpu="auto", gradient_accumulation_steps=1, train_batch_size="auto")
    configure_deepspeed(acc, gradient_accumulation_steps=4, max_grad_norm=0.5)
    ds = acc.state.deepspeed_plugin.deepspeed_config
    assert ds["gradient_accumulation_steps"] == 4 and acc.gradient_accumulation_steps == 4  # one engine step per trainer step
    assert ds["train_micro_batch_size_per_gpu"] == 1 and "train_batch_size" not in ds and ds["gradient_clipping"] == 0.5
    assert zero_stage(acc) == 3 and sharded(acc)
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU, num_processes=2)
    assert zero_stage(ddp) is None and not sharded(ddp)
    configure_deepspeed(ddp, 4, 0.5)  # not DeepSpeed: nothing to fill, no error


def test_zero3_reference_is_loaded_again_not_deep_copied():
    policy = SimpleNamespace(model=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cannot be deep-copied.*zero3_init_flag: false"):
        build_reference(policy, fake_deepspeed(3), rebuild=None)
    loads = []

    def rebuild() -> SimpleNamespace:
        loads.append(1)
        return SimpleNamespace(model=torch.nn.Linear(2, 2))

    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install deepspeed"):
            build_reference(policy, fake_deepspeed(3), rebuild=rebuild)
        assert loads == [1]  # the rebuild ran (frozen, eval) before the engine was asked for
    else:
        pytest.skip("deepspeed is installed: the engine path needs GPUs")


def _cpu_accelerator(kind=DistributedType.MULTI_CPU, processes=2):
    return SimpleNamespace(distributed_type=kind, num_processes=processes, state=SimpleNamespace())


def test_a_sharding_config_that_accelerate_runs_as_cpu_ddp_is_named():
    from agents.distributed import cpu_fsdp_requested, ignored_launch_warning

    fsdp2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    assert cpu_fsdp_requested(_cpu_accelerator(), fsdp2) and ignored_launch_warning(_cpu_accelerator(), fsdp2) is None
    assert not cpu_fsdp_requested(_cpu_accelerator(DistributedType.FSDP), fsdp2)  # accelerate shards it itself
    fsdp1 = ignored_launch_warning(_cpu_accelerator(), {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})
    assert "FSDP1" in fsdp1 and "fsdp_version: 2" in fsdp1
    zero3 = ignored_launch_warning(_cpu_accelerator(), {"ACCELERATE_USE_DEEPSPEED": "true"})
    assert "DeepSpeed" in zero3 and "plain DDP" in zero3
    assert ignored_launch_warning(_cpu_accelerator(DistributedType.MULTI_GPU), {"ACCELERATE_USE_DEEPSPEED": "true"}) is None


def test_processes_that_each_run_alone_are_refused():
    from agents.distributed import split_launch_error

    message = split_launch_error(1, {"WORLD_SIZE": "2"})
    assert "WORLD_SIZE=2" in message and "ACCELERATE_USE_CPU=1" in message
    assert split_launch_error(2, {"WORLD_SIZE": "2"}) is None and split_launch_error(1, {}) is None


def test_fsdp_accumulation_reduces_every_micro_batch():
    from agents.distributed import accumulation_plugin

    assert accumulation_plugin(2, {"ACCELERATE_USE_FSDP": "true"}).sync_each_batch is True
    plain = accumulation_plugin(4, {})
    assert plain.num_steps == 4 and plain.sync_each_batch is False and plain.sync_with_dataloader is False
