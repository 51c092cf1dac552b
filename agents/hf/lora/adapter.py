"""The LoRA adapter of an HF backbone (through ``peft``): settings, attaching, checking a loaded one, merging.

For ``a2d`` and ``vlm`` (``hf-vlm-dllm:``) backbones the mask token's input-embedding row trains
with the adapter (peft ``trainable_token_indices``): a causal LM has never seen that token, and a
frozen random row would be the only input at every masked position.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

__all__ = [
    "LoraSettings", "adapted_modules", "apply_lora", "base_model", "check_adapter", "has_adapter", "merge_lora",
    "peft_module",
]

logger = logging.getLogger(__name__)
#: backbone kinds whose mask token was (possibly) added to a causal LM: its embedding row trains with the adapter
MASK_ROW_KINDS = ("a2d", "vlm")
_PEFT_HINT = "pip install peft (it is in the [trl] extra: pip install -e '.[trl]')"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (peft ``LoraConfig`` names); ``target_modules`` ``all-linear`` = every linear layer but the head."""

    r: int
    alpha: float
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = "all-linear"

    @classmethod
    def parse_targets(cls, text: str | Sequence[str]) -> tuple[str, ...] | str:
        """``"all-linear"`` or a comma-separated list of module names (``q_proj,v_proj``) as peft takes it."""
        if not isinstance(text, str):
            return tuple(str(t) for t in text)
        text = text.strip()
        if text == "all-linear":
            return text
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        if not names:
            raise ValueError(f"lora_target_modules={text!r}: name modules, e.g. 'q_proj,k_proj,v_proj,o_proj' or 'all-linear'")
        return names

    def peft_config(self, **extra: Any) -> Any:
        """The ``peft.LoraConfig`` of these settings (``extra``: more ``LoraConfig`` fields)."""
        return peft_module().LoraConfig(r=int(self.r), lora_alpha=float(self.alpha), lora_dropout=float(self.dropout),
                                        target_modules=self.target_modules, **extra)  # fmt: skip


def peft_module() -> Any:
    """The ``peft`` package, or ``ImportError`` saying how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise ImportError(f"LoRA needs the peft package, which is not installed ({exc}); {_PEFT_HINT}") from None
    return peft


def has_adapter(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is wrapped in a peft adapter."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(backbone, PeftModel)


def base_model(backbone: nn.Module) -> nn.Module:
    """The transformers model inside a (possibly peft-wrapped) backbone."""
    return backbone.get_base_model() if has_adapter(backbone) else backbone


def apply_lora(policy: Any, settings: LoraSettings) -> None:
    """Wrap ``policy.model.backbone`` in a fresh LoRA adapter (base weights frozen; a2d/vlm: the mask row trains too)."""
    peft = peft_module()
    denoiser = policy.model
    extra = {"trainable_token_indices": [int(denoiser.config.mask_token_id)]} if denoiser.kind in MASK_ROW_KINDS else {}
    try:
        denoiser.backbone = peft.get_peft_model(denoiser.backbone, settings.peft_config(**extra))
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in denoiser.backbone.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"lora_target_modules={settings.target_modules!r} does not fit {type(denoiser.backbone).__name__} ({exc}); "
            f"its linear layers are named {names[:20]}: pick from them or use 'all-linear'"
        ) from None


def adapted_modules(model: nn.Module) -> set[str]:
    """Names (in the un-wrapped model) of the modules a LoRA adapter wraps."""
    from peft.tuners.lora import LoraLayer

    return {name for name, module in base_model(model).named_modules() if isinstance(module, LoraLayer)}


def _modules_settings_would_adapt(backbone: nn.Module, settings: LoraSettings) -> set[str] | None:
    """The modules ``settings`` would wrap in ``backbone``'s architecture (a weightless copy on the meta device); None if unknown."""
    base = base_model(backbone)
    try:
        with torch.device("meta"):
            empty = type(base)(copy.deepcopy(base.config))
        return adapted_modules(peft_module().get_peft_model(empty, settings.peft_config()))
    except Exception as exc:  # an architecture that cannot be rebuilt from its config alone
        logger.warning("cannot check lora_target_modules against the saved adapter of %s (%s)", type(base).__name__, exc)
        return None


def check_adapter(backbone: nn.Module, settings: LoraSettings | None) -> None:
    """``ValueError`` with the fix unless the loaded adapter of ``backbone`` has these settings' r, alpha and target modules."""
    saved = backbone.peft_config["default"]
    if settings is None:
        raise ValueError(
            f"the policy holds a LoRA adapter (r={saved.r}) but lora_r is 0; set lora_r: {saved.r} (--lora_r "
            f"{saved.r}) to keep training it, or merge it first (python -m agents.hf.lora merge SRC DST) to train every weight"
        )
    if int(saved.r) != int(settings.r):
        raise ValueError(f"the policy's LoRA adapter has r={saved.r} but lora_r is {settings.r}; set lora_r: {saved.r}")
    if float(saved.lora_alpha) != float(settings.alpha):
        raise ValueError(
            f"the policy's LoRA adapter has alpha={float(saved.lora_alpha)} but lora_alpha is {float(settings.alpha)}; "
            f"set lora_alpha: {float(saved.lora_alpha)}"
        )
    have, want = adapted_modules(backbone), _modules_settings_would_adapt(backbone, settings)
    if want is not None and have != want:
        names = sorted({name.rsplit(".", 1)[-1] for name in have})
        asked = settings.target_modules
        asked = asked if isinstance(asked, str) else ",".join(asked)
        raise ValueError(
            f"the policy's LoRA adapter wraps {len(have)} modules named {names}, but lora_target_modules: {asked} "
            f"names {len(want)} others: set lora_target_modules: {','.join(names)} (or the form it was trained "
            "with, e.g. all-linear)"
        )


def merge_lora(policy: Any) -> None:
    """Fold the adapter into the base weights in place (the backbone becomes a plain transformers model)."""
    if has_adapter(policy.model.backbone):
        policy.model.backbone = policy.model.backbone.merge_and_unload()
