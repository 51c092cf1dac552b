"""LoRA (through ``peft``) and gradient checkpointing for :class:`agents.hf.policy.HFDiffusionPolicy` backbones.

* :func:`configure_backbone` -- what the trainer calls on an HF policy (``TrainConfig.lora_r`` > 0:
  wrap the backbone in a ``peft`` LoRA adapter, base weights frozen; ``gradient_checkpointing``:
  non-reentrant activation checkpointing when the backbone supports it). For ``a2d`` and ``vlm``
  (``hf-vlm-dllm:``) backbones the mask token's input-embedding row is trained too (peft ``trainable_token_indices``): a causal LM
  has never seen that token, and a frozen random row would be the only input at every masked
  position.
* Checkpoints with LoRA (:func:`save_backbone`, :func:`load_adapter`): the frozen **base**
  weights in the backbone's own HF format at the folder's top level (so the folder is
  self-contained and no path to the original model is kept) plus ``adapter/`` (peft's
  ``adapter_config.json`` + ``adapter_model.safetensors``); ``policy_config.json`` records
  ``lora``. Loading rebuilds the base and re-attaches the adapter unmerged, so a resumed run is
  exact. ``python -m agents.hf.lora merge SRC DST`` writes a merged, adapter-free checkpoint
  (a plain HF model folder plus ``policy_config.json``) for export or full fine-tuning.
* :func:`adapter_disabled_reference` -- the frozen KL reference of a fresh adapter: the same
  model with the adapter switched off (peft ``disable_adapter``), as TRL does with peft, so no
  second copy of an 8B model is held. It equals the initial policy because a fresh adapter's
  ``lora_B`` and token deltas start at zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "ADAPTER_DIR",
    "LoraSettings",
    "adapter_disabled_reference",
    "configure_backbone",
    "enable_gradient_checkpointing",
    "has_adapter",
    "is_checkpointing",
    "load_adapter",
    "lora_meta",
    "merge_lora",
    "save_backbone",
]

logger = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"
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


def _peft() -> Any:
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


def _pretrained(backbone: nn.Module) -> nn.Module:
    """The transformers model inside a (possibly peft-wrapped) backbone."""
    return backbone.get_base_model() if has_adapter(backbone) else backbone


def enable_gradient_checkpointing(backbone: nn.Module) -> bool:
    """Turn on non-reentrant activation checkpointing; False (with a warning) when the backbone does not support it."""
    model = _pretrained(backbone)
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
    model = _pretrained(backbone)
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def apply_lora(policy: Any, settings: LoraSettings) -> None:
    """Wrap ``policy.model.backbone`` in a fresh LoRA adapter (base weights frozen; a2d/vlm: the mask row trains too)."""
    peft = _peft()
    denoiser = policy.model
    extra = {"trainable_token_indices": [int(denoiser.config.mask_token_id)]} if denoiser.kind in MASK_ROW_KINDS else {}
    config = peft.LoraConfig(r=int(settings.r), lora_alpha=float(settings.alpha), lora_dropout=float(settings.dropout),
                             target_modules=settings.target_modules, **extra)  # fmt: skip
    try:
        denoiser.backbone = peft.get_peft_model(denoiser.backbone, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in denoiser.backbone.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"lora_target_modules={settings.target_modules!r} does not fit {type(denoiser.backbone).__name__} ({exc}); "
            f"its linear layers are named {names[:20]}: pick from them or use 'all-linear'"
        ) from None
    policy.lora_fresh = True


def configure_backbone(policy: Any, lora: LoraSettings | None, gradient_checkpointing: bool) -> None:
    """Apply the trainer's LoRA and gradient-checkpointing settings to an HF policy (module docstring)."""
    backbone = policy.model.backbone
    if has_adapter(backbone):  # e.g. init_from a LoRA checkpoint: keep training its adapter
        saved = backbone.peft_config["default"]
        if lora is None:
            raise ValueError(
                f"the policy holds a LoRA adapter (r={saved.r}) but lora_r is 0; set lora_r: {saved.r} (--lora_r "
                f"{saved.r}) to keep training it, or merge it first (python -m agents.hf.lora merge SRC DST) to train every weight"
            )
        if int(saved.r) != int(lora.r):
            raise ValueError(f"the policy's LoRA adapter has r={saved.r} but lora_r is {lora.r}; set lora_r: {saved.r}")
        policy.lora_fresh = False
    elif lora is not None:
        apply_lora(policy, lora)
    if gradient_checkpointing:
        enable_gradient_checkpointing(policy.model.backbone)


def lora_meta(backbone: nn.Module) -> dict[str, Any] | None:
    """The ``lora`` record of ``policy_config.json`` (None without an adapter)."""
    if not has_adapter(backbone):
        return None
    cfg = backbone.peft_config["default"]
    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules)
    return {"r": int(cfg.r), "alpha": float(cfg.lora_alpha), "dropout": float(cfg.lora_dropout),
            "target_modules": targets, "adapter": ADAPTER_DIR}  # fmt: skip


def _base_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
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
        backbone.get_base_model().save_pretrained(path, state_dict=cast(_base_state_dict(backbone)))
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
    peft = _peft()
    policy.model.backbone = peft.PeftModel.from_pretrained(policy.model.backbone, folder, is_trainable=True)
    policy.lora_fresh = False


def merge_lora(policy: Any) -> None:
    """Fold the adapter into the base weights in place (the backbone becomes a plain transformers model)."""
    if has_adapter(policy.model.backbone):
        policy.model.backbone = policy.model.backbone.merge_and_unload()
    policy.lora_fresh = False


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
    """A shallow copy of ``policy`` whose model runs with the adapter off; None unless the adapter is fresh (zero)."""
    import copy

    if not getattr(policy, "lora_fresh", False) or not has_adapter(policy.model.backbone):
        return None
    reference = copy.copy(policy)
    reference.model = _AdapterOff(policy.model)
    return reference


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.hf.lora merge SRC DST``: write SRC (a LoRA checkpoint) with its adapter merged to DST."""
    parser = argparse.ArgumentParser(prog="python -m agents.hf.lora", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge a LoRA checkpoint's adapter into its base weights")
    merge.add_argument("src")
    merge.add_argument("dst")
    merge.add_argument("--trust_remote_code", action="store_true", help="needed for hf-dllm:/hf-dream: remote code")
    args = parser.parse_args(argv)
    from agents.hf.policy import HFDiffusionPolicy

    policy = HFDiffusionPolicy.from_pretrained(args.src, trust_remote_code=args.trust_remote_code)
    if not has_adapter(policy.model.backbone):
        print(f"{args.src}: no LoRA adapter (policy_config.json has no 'lora'); nothing to merge", file=sys.stderr)
        return 2
    merge_lora(policy)
    policy.save_pretrained(args.dst)
    print(json.dumps({"merged": args.src, "to": args.dst}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
