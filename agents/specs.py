"""Trainable policy specs: what ``policy:`` / ``init_from:`` of a training config may name.

* ``diffusion`` / ``ar`` -- :meth:`agents.DiffusionPolicy.tiny` / :meth:`agents.autoregressive.ARPolicy.tiny`;
* ``hf-a2d:<dir>`` -- a local Hugging Face causal LM run as a masked-diffusion model
  (:class:`agents.hf.HFDiffusionPolicy`, ``kind="a2d"``);
* ``hf-dllm:<dir>`` -- a local masked-diffusion LM: LLaDA-style (logits at ``i`` predict token
  ``i``), or Dream-style (shifted) when its config's ``model_type`` is Dream's; ``hf-dream:<dir>``
  forces the shift. Remote code runs only with ``trust_remote_code=True``;
* ``hf-vlm-dllm:<dir>`` -- a local LLaVA-style vision-language model (``AutoModelForImageTextToText``)
  run as a masked-diffusion model over its language model, seeing the image
  (:class:`agents.hf.vlm.HFVLMDiffusionPolicy`);
* ``hf-dgemma:<dir>`` -- a local DiffusionGemma folder (uniform-state block diffusion, multimodal;
  :class:`agents.hf.dgemma.DGemmaPolicy`); ``hf-dllm:<dir>`` selects it too when the folder's
  ``model_type`` is ``diffusion_gemma``;
* ``<dir>`` -- a checkpoint: its ``policy_config.json`` ``format`` picks the class
  (:data:`CHECKPOINT_FORMATS`) and ``Class.from_pretrained(dir, **kw)`` loads it;
* ``module:factory`` / ``path/to/file.py:factory`` -- ``factory(**kw)`` must return a
  :class:`agents.policy.TrainablePolicy`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["CHECKPOINT_FORMATS", "HF_PREFIXES", "TRAINABLE_FORMS", "checkpoint_class", "import_target", "trainable_policy"]

#: policy_config.json "format" -> "module:Class" with a from_pretrained(dir, **kw) classmethod
CHECKPOINT_FORMATS: dict[str, str] = {
    "lavida-diffusion-policy": "agents.diffusion.policy:DiffusionPolicy",
    "lavida-ar-policy": "agents.autoregressive.policy:ARPolicy",
    "lavida-hf-diffusion": "agents.hf.policy:HFDiffusionPolicy",
    "lavida-hf-vlm-diffusion": "agents.hf.vlm:HFVLMDiffusionPolicy",
    "lavida-hf-dgemma": "agents.hf.dgemma:DGemmaPolicy",
}
#: spec prefix -> HFDiffusionPolicy.from_hf kind
HF_PREFIXES: dict[str, str] = {"hf-a2d": "a2d", "hf-dllm": "auto", "hf-dream": "dream"}
TRAINABLE_FORMS = (
    "diffusion | ar | hf-a2d:<dir> | hf-dllm:<dir> | hf-dream:<dir> | hf-vlm-dllm:<dir> | hf-dgemma:<dir> | <checkpoint dir> "
    "| module:factory"
)


def load_target(target: str) -> Any:
    """The attribute a ``"module:name"`` string names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def checkpoint_class(folder: str | Path) -> Any:
    """The class that loads the checkpoint ``folder`` (by its ``policy_config.json`` ``format``)."""
    meta_path = Path(folder) / "policy_config.json"
    if not meta_path.is_file():
        raise ValueError(f"{str(folder)!r} is a directory but not a policy checkpoint: no policy_config.json in it")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta_path}: cannot read policy_config.json ({exc})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt not in CHECKPOINT_FORMATS:
        raise ValueError(f"{meta_path}: unknown checkpoint format {fmt!r}; known: {sorted(CHECKPOINT_FORMATS)}")
    try:
        return load_target(CHECKPOINT_FORMATS[fmt])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{meta_path}: format {fmt!r} needs {CHECKPOINT_FORMATS[fmt]}, which is unavailable: {exc}")


def import_target(spec: str, source: str) -> ModuleType:
    """The module ``source`` of a ``module:factory`` / ``file.py:factory`` spec (``ValueError`` naming it)."""
    if source.endswith(".py"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"policy spec {spec!r}: file {source!r} not found")
        name = f"lavida_policy_{path.stem}_{hashlib.blake2b(str(path.resolve()).encode(), digest_size=4).hexdigest()}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"policy spec {spec!r}: cannot import {source!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        raise ValueError(f"policy spec {spec!r}: cannot import module {source!r} ({exc})") from None


def _is_dgemma(folder: str) -> bool:
    from agents.hf.dgemma import is_dgemma_folder

    return is_dgemma_folder(folder)


def trainable_policy(spec: str, seed: int = 0, trust_remote_code: bool = False, **kw: Any) -> Any:
    """The :class:`agents.policy.TrainablePolicy` a training spec names (forms in the module docstring)."""
    from agents.policy import require_trainable

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"policy spec must be a non-empty string ({TRAINABLE_FORMS}), got {spec!r}")
    spec = spec.strip()
    if spec == "diffusion":
        from agents.diffusion.policy import DiffusionPolicy

        return DiffusionPolicy.tiny(seed=seed, **kw)
    if spec == "ar":
        from agents.autoregressive.policy import ARPolicy

        return ARPolicy.tiny(seed=seed, **kw)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "hf-vlm-dllm":
        if not rest:
            raise ValueError(f"policy spec {spec!r} needs a directory after 'hf-vlm-dllm:'")
        from agents.hf.vlm import HFVLMDiffusionPolicy

        return HFVLMDiffusionPolicy.from_hf(rest, trust_remote_code=trust_remote_code, seed=seed, **kw)
    if sep and (prefix == "hf-dgemma" or prefix == "hf-dllm" and rest and _is_dgemma(rest)):
        if not rest:
            raise ValueError(f"policy spec {spec!r} needs a directory after '{prefix}:'")
        from agents.hf.dgemma import DGemmaPolicy

        return DGemmaPolicy.from_hf(rest, seed=seed, **kw)
    if sep and prefix in HF_PREFIXES:
        if not rest:
            raise ValueError(f"policy spec {spec!r} needs a directory after '{prefix}:'")
        from agents.hf.policy import HFDiffusionPolicy

        return HFDiffusionPolicy.from_hf(rest, kind=HF_PREFIXES[prefix], trust_remote_code=trust_remote_code, seed=seed, **kw)
    if os.path.isdir(spec):
        cls = checkpoint_class(spec)
        extra = {"trust_remote_code": True} if trust_remote_code else {}
        return require_trainable(cls.from_pretrained(spec, **extra, **kw))
    if sep and rest and prefix:
        source, _, attr = spec.rpartition(":")
        module = import_target(spec, source)
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ValueError(f"policy spec {spec!r}: {source!r} has no callable {attr!r}")
        return require_trainable(factory(**kw))
    raise ValueError(f"unknown trainable policy spec {spec!r}; expected one of: {TRAINABLE_FORMS}")
