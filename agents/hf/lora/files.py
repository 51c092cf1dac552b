"""Checkpoints with a LoRA adapter: the frozen base in the backbone's own HF format plus ``adapter/``.

The base weights sit at the folder's top level (so the folder is self-contained and no path to
the original model is kept), the adapter in ``adapter/`` (peft's ``adapter_config.json`` +
``adapter_model.safetensors``); ``policy_config.json`` records ``lora`` (:func:`lora_meta`).
Loading rebuilds the base and re-attaches the adapter unmerged, so a resumed run is exact.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from agents.hf.lora.adapter import has_adapter, peft_module

__all__ = ["ADAPTER_DIR", "base_state_dict", "load_adapter", "lora_meta", "save_backbone"]

ADAPTER_DIR = "adapter"


def lora_meta(backbone: nn.Module) -> dict[str, Any] | None:
    """The ``lora`` record of ``policy_config.json`` (None without an adapter)."""
    if not has_adapter(backbone):
        return None
    cfg = backbone.peft_config["default"]
    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules)
    return {"r": int(cfg.r), "alpha": float(cfg.lora_alpha), "dropout": float(cfg.lora_dropout),
            "target_modules": targets, "adapter": ADAPTER_DIR}  # fmt: skip


def base_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights under its own (un-wrapped) names: adapter tensors dropped, ``base_layer.`` removed."""
    out = {}
    for name, tensor in backbone.get_base_model().state_dict().items():
        if "lora_" in name or "trainable_tokens_" in name:
            continue
        out[name.replace(".token_adapter.base_layer.", ".").replace(".base_layer.", ".")] = tensor
    return out


def save_backbone(backbone: nn.Module, path: str, dtype: torch.dtype | None = None) -> None:
    """``save_pretrained`` of the backbone (floating weights cast to ``dtype`` when given, config.json saying so);
    with an adapter: the base weights at ``path`` and the adapter (as held) in ``path/adapter``."""
    from agents.hf.precision import write_config_dtype

    def cast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state if dtype is None else {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}

    if not has_adapter(backbone):
        backbone.save_pretrained(path, **({} if dtype is None else {"state_dict": cast(backbone.state_dict())}))
    else:
        backbone.get_base_model().save_pretrained(path, state_dict=cast(base_state_dict(backbone)))
        backbone.save_pretrained(os.path.join(path, ADAPTER_DIR), save_embedding_layers=False)  # embeddings: in the base
    if dtype is not None:
        write_config_dtype(path, dtype)


def load_adapter(policy: Any, path: str, meta: dict[str, Any] | None) -> None:
    """Re-attach the adapter ``save_backbone`` wrote (``meta``: ``policy_config.json``'s ``lora``; None = none)."""
    if not meta:
        return
    folder = os.path.join(path, str(meta.get("adapter", ADAPTER_DIR)))
    if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
        raise FileNotFoundError(
            f"{folder}/adapter_config.json not found, but {path}/policy_config.json records a LoRA adapter; the "
            "checkpoint is incomplete: save it again or use another checkpoint"
        )
    policy.model.backbone = peft_module().PeftModel.from_pretrained(policy.model.backbone, folder, is_trainable=True)
