"""LoRA (through ``peft``) and gradient checkpointing of HF backbones (:mod:`agents.hf`), one job per module.

* :mod:`~agents.hf.lora.adapter` -- :class:`LoraSettings`, attaching a fresh adapter (base frozen;
  a2d/vlm: the mask token's embedding row trains too), checking a loaded adapter against the
  settings (r, alpha and target modules must match), merging.
* :mod:`~agents.hf.lora.files` -- checkpoints with an adapter: the base in the backbone's own HF
  format plus ``adapter/``; ``policy_config.json`` records ``lora``.
* :mod:`~agents.hf.lora.reference` -- the KL reference of a LoRA policy: the same model with the
  adapter off.
* :mod:`~agents.hf.lora.gradient_checkpointing` -- non-reentrant activation checkpointing.
* :mod:`~agents.hf.lora.setup` -- :func:`configure_backbone`, what the trainer calls
  (``TrainConfig.lora_*``, ``gradient_checkpointing``).
* ``python -m agents.hf.lora merge SRC DST`` (:mod:`agents.hf.lora.__main__`) -- a merged,
  adapter-free copy of a LoRA checkpoint of any policy class, for export or full fine-tuning.
"""

from __future__ import annotations

from agents.hf.lora.adapter import LoraSettings, adapted_modules, apply_lora, check_adapter, has_adapter, merge_lora
from agents.hf.lora.files import ADAPTER_DIR, base_state_dict, load_adapter, lora_meta, save_backbone
from agents.hf.lora.gradient_checkpointing import enable_gradient_checkpointing, is_checkpointing
from agents.hf.lora.reference import adapter_disabled_reference
from agents.hf.lora.setup import configure_backbone

__all__ = [
    "ADAPTER_DIR", "LoraSettings", "adapted_modules", "adapter_disabled_reference", "apply_lora", "base_state_dict",
    "check_adapter", "configure_backbone", "enable_gradient_checkpointing", "has_adapter", "is_checkpointing",
    "load_adapter", "lora_meta", "merge_lora", "save_backbone",
]
