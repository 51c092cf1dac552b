"""What the trainer applies to an HF policy: its LoRA settings and gradient checkpointing."""

from __future__ import annotations

from typing import Any

from agents.hf.lora.adapter import LoraSettings, apply_lora, check_adapter, has_adapter
from agents.hf.lora.gradient_checkpointing import enable_gradient_checkpointing

__all__ = ["configure_backbone"]


def configure_backbone(policy: Any, lora: LoraSettings | None, gradient_checkpointing: bool) -> None:
    """A fresh adapter when ``lora`` is set (a loaded one must match it: :func:`check_adapter`), then checkpointing."""
    backbone = policy.model.backbone
    if has_adapter(backbone):  # e.g. init_from a LoRA checkpoint: keep training its adapter
        check_adapter(backbone, lora)
    elif lora is not None:
        apply_lora(policy, lora)
    if gradient_checkpointing:
        enable_gradient_checkpointing(policy.model.backbone)
