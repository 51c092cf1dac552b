"""Trainable policy specs: what ``policy:`` / ``init_from:`` of a training config may name.

* ``diffusion`` / ``ar`` -- :meth:`agents.DiffusionPolicy.tiny` / :meth:`agents.autoregressive.ARPolicy.tiny`;
* ``hf-a2d:<dir>`` -- a local Hugging Face causal LM run as a masked-diffusion model
  (:class:`agents.hf.HFDiffusionPolicy`, ``kind="a2d"``);
* ``hf-dllm:<dir>`` -- a local masked-diffusion LM: native Dream when its config's ``model_type``
  is Dream's (logits shifted by one; no remote code), a masked LM transformers knows
  (``AutoModelForMaskedLM``: BERT, ModernBERT, ...), else remote code (LLaDA-style: logits at ``i``
  predict token ``i``), which runs only with ``trust_remote_code=True``; ``hf-dream:<dir>`` forces
  the shift;
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

The ``hf-*:`` prefixes (:data:`TRAINABLE_HF_PREFIXES`) mean the same class in ``lavida train``,
``lavida eval`` (:func:`baselines.specs.resolve_policy` sends them here) and ``lavida check-policy``.
Their options are ``from_hf``'s (``mask_token_id``, ``dtype``, ``use_chat_template``, ...) plus any
:class:`agents.diffusion.policy.DecodingConfig` field (``gen_length=``, ``temperature=``, ``cache=``...)
and ``device=``.
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

__all__ = ["CHECKPOINT_FORMATS", "HF_PREFIXES", "TRAINABLE_FORMS", "TRAINABLE_HF_PREFIXES", "checkpoint_class",
           "import_target", "trainable_policy"]  # fmt: skip

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
#: every spec prefix of a trainable HF backbone (one class per prefix in train, eval and check-policy)
TRAINABLE_HF_PREFIXES = (*HF_PREFIXES, "hf-vlm-dllm", "hf-dgemma")
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


def _is_llada_v(folder: str) -> bool:
    from agents.hf.llada_v import is_llada_v

    try:
        raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the policy's own loader names what is wrong with the folder
    return isinstance(raw, dict) and is_llada_v(raw)


def _dgemma_keywords() -> tuple[set[str], dict[str, Any]]:
    """DGemmaPolicy's own keywords (its ``__init__`` knobs) and its decoding defaults."""
    import inspect

    from agents.hf.dgemma import DEFAULT_DECODING, DGemmaPolicy

    own = set(inspect.signature(DGemmaPolicy.__init__).parameters) - {"self", "model", "tokenizer", "image_processor", "seed"}
    return own | {"dtype"}, dict(DEFAULT_DECODING)


def _hf_options(spec: str, kw: dict[str, Any], own_options: bool = False) -> tuple[dict[str, Any], Any]:
    """``from_hf`` keywords of an ``hf-*:`` spec: DecodingConfig fields folded into ``decoding=``; and ``device``.

    ``own_options``: DGemmaPolicy, whose keywords are its ``__init__`` knobs and whose decoding defaults
    (``DEFAULT_DECODING``) sit under the given fields.
    """
    from dataclasses import fields

    from agents.diffusion.policy import DecodingConfig

    kw = dict(kw)
    device = kw.pop("device", None)
    allowed, base = _dgemma_keywords() if own_options else ({"mask_token_id", "decoding", "dtype", "use_chat_template"}, {})
    names = {f.name for f in fields(DecodingConfig)}
    settings = {k: kw.pop(k) for k in list(kw) if k in names}
    if settings:
        if kw.get("decoding") is not None:
            raise ValueError(f"policy spec {spec!r}: pass decoding= or the fields {sorted(settings)}, not both")
        try:
            kw["decoding"] = DecodingConfig(**{**base, **settings}).validate()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"policy spec {spec!r}: bad decoding options {settings}: {exc}") from None
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ValueError(f"policy spec {spec!r} does not accept the options {unknown}; it takes {sorted(allowed | names)} "
                         "and device")  # fmt: skip
    return kw, device


def _hf_policy(spec: str, prefix: str, rest: str, seed: int, trust_remote_code: bool, kw: dict[str, Any]) -> Any:
    """The HF backbone policy an ``hf-*:`` spec names."""
    if not rest:
        raise ValueError(f"policy spec {spec!r} needs a directory after '{prefix}:'")
    dgemma = prefix == "hf-dgemma" or prefix == "hf-dllm" and _is_dgemma(rest)
    options, device = _hf_options(spec, kw, own_options=dgemma)
    if dgemma:
        from agents.hf.dgemma import DGemmaPolicy

        policy = DGemmaPolicy.from_hf(rest, seed=seed, **options)
    elif prefix == "hf-vlm-dllm" or prefix == "hf-dllm" and _is_llada_v(rest):
        from agents.hf.vlm import HFVLMDiffusionPolicy

        policy = HFVLMDiffusionPolicy.from_hf(rest, trust_remote_code=trust_remote_code, seed=seed, **options)
    else:
        from agents.hf.policy import HFDiffusionPolicy

        policy = HFDiffusionPolicy.from_hf(rest, kind=HF_PREFIXES[prefix], trust_remote_code=trust_remote_code,
                                           seed=seed, **options)  # fmt: skip
    if device is not None:
        policy.model.to(device)
    return policy


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
    if sep and prefix in TRAINABLE_HF_PREFIXES:
        return _hf_policy(spec, prefix, rest, seed, trust_remote_code, kw)
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
