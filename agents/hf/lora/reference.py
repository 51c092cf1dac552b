"""The KL reference of a LoRA policy: the same model with its adapter switched off (peft ``disable_adapter``).

As TRL does with peft, no second copy of the model is held. The reference is the base weights
under the adapter: for a fresh adapter (``lora_B`` and the token deltas start at zero) that is
the initial policy; after ``init_from`` a LoRA checkpoint it is the base that checkpoint's
adapter was trained on.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from agents.hf.lora.adapter import has_adapter

__all__ = ["adapter_disabled_reference"]


class _AdapterOff:
    """The KL reference view of a LoRA policy's model: the same module, called in eval mode with the adapter off."""

    def __init__(self, denoiser: nn.Module) -> None:
        self._denoiser = denoiser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._denoiser, name)

    @contextmanager
    def _off(self) -> Iterator[None]:
        was = self._denoiser.training
        self._denoiser.eval()
        try:
            with self._denoiser.backbone.disable_adapter():
                yield
        finally:
            self._denoiser.train(was)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._off(), torch.no_grad():
            return self._denoiser(*args, **kwargs)


def adapter_disabled_reference(policy: Any) -> Any | None:
    """A shallow copy of ``policy`` whose model runs with the adapter off; None unless the backbone has an adapter."""
    backbone = getattr(getattr(policy, "model", None), "backbone", None)
    if backbone is None or not has_adapter(backbone):
        return None
    reference = copy.copy(policy)
    reference.model = _AdapterOff(policy.model)
    return reference
