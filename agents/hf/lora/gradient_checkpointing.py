"""Non-reentrant activation checkpointing of a (possibly peft-wrapped) HF backbone."""

from __future__ import annotations

import logging

from torch import nn

from agents.hf.lora.adapter import base_model

__all__ = ["enable_gradient_checkpointing", "is_checkpointing"]

logger = logging.getLogger(__name__)


def enable_gradient_checkpointing(backbone: nn.Module) -> bool:
    """Turn on non-reentrant activation checkpointing; False (with a warning) when the backbone does not support it."""
    model = base_model(backbone)
    if not getattr(model, "supports_gradient_checkpointing", False) or not hasattr(model, "gradient_checkpointing_enable"):
        logger.warning(
            "%s does not support gradient checkpointing (supports_gradient_checkpointing is False): training without it; "
            "set gradient_checkpointing: false to silence this", type(model).__name__,
        )  # fmt: skip
        return False
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def is_checkpointing(backbone: nn.Module) -> bool:
    """Whether activation checkpointing is on in the (possibly peft-wrapped) backbone."""
    model = base_model(backbone)
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))
