"""Policy specs: the ``--policy SPEC`` strings of ``lavida eval`` resolved to :class:`agents.policy.Policy` objects.

Forms (docs/design.md, "Public API"), checked in this order:

* ``random`` | ``constant`` | ``oracle`` -- :mod:`baselines.simple` (``oracle`` needs
  ``prepare(env, indices)`` before acting; the evaluator calls it);
* ``hf:<dir>`` | ``hf-vlm:<dir>`` -- the ``generate``-based Hugging Face adapters of
  :mod:`baselines.hf` (local folders only);
* ``hf-a2d:<dir>`` | ``hf-dllm:<dir>`` | ``hf-dream:<dir>`` | ``hf-vlm-dllm:<dir>`` -- the trainable
  HF backbones, built by :func:`agents.specs.trainable_policy` exactly as ``lavida train`` builds
  them (options: ``from_hf``'s plus the decoding fields, e.g. ``gen_length=``, ``temperature=``);
* ``<dir>`` -- a LaViDa checkpoint: its ``policy_config.json`` ``format`` picks the class
  (``lavida-diffusion-policy`` -> ``agents.DiffusionPolicy``; ``lavida-ar-policy`` ->
  ``agents.autoregressive.ARPolicy``) and ``Class.from_pretrained(dir, **kw)`` loads it;
  a plain Hugging Face model folder is refused with the ``hf*:`` spec to use;
* ``module:factory`` or ``path/to/file.py:factory`` -- imports the module (or file) and
  calls ``factory(**kw)``; the result (or the attribute itself, if it already has ``act``)
  must be a Policy or a callable ``obs -> action`` (wrapped by ``agents.policy.as_policy``).

``**kw`` goes to the constructor / ``from_pretrained`` / factory. Anything else is a
``ValueError`` that lists these forms; missing paths and modules are named in the message.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from agents.specs import CHECKPOINT_FORMATS, TRAINABLE_HF_PREFIXES, checkpoint_class, load_target  # noqa: F401
from agents.specs import import_target as _import_target

__all__ = ["CHECKPOINT_FORMATS", "SPEC_FORMS", "resolve_policy"]

SPEC_FORMS = (
    "random | constant | oracle | hf:<dir> | hf-vlm:<dir> | hf-dllm:<dir> | hf-a2d:<dir> | hf-dream:<dir> | "
    "hf-vlm-dllm:<dir> | <checkpoint dir> | "
    "module:factory | path/to/file.py:factory"
)
_SIMPLE = {"random": "RandomPolicy", "constant": "ConstantPolicy", "oracle": "OraclePolicy"}
_ADAPTERS = {
    "hf": "baselines.hf_causal:HFCausalLMPolicy",
    "hf-vlm": "baselines.hf_vlm:HFVLMPolicy",
}

_load = load_target


def _construct(cls: Callable[..., Any], spec: str, args: tuple, kw: dict[str, Any]) -> Any:
    try:
        inspect.signature(cls).bind(*args, **kw)
    except TypeError as exc:
        raise ValueError(f"policy spec {spec!r} does not accept the options {sorted(kw)}: {exc}") from None
    except ValueError:  # no signature available (builtins): let the call decide
        pass
    return cls(*args, **kw)


def _checkpoint(folder: Path, spec: str, kw: dict[str, Any]) -> Any:
    meta_path = folder / "policy_config.json"
    if not meta_path.is_file():
        if (folder / "config.json").is_file():
            from baselines.hf import KINDS, load_local_config, model_kinds

            try:
                kinds = model_kinds(load_local_config(folder, "causal"))
            except ValueError:
                kinds = []
            hint = " or ".join(f"{KINDS[k][2]}{spec}" for k in kinds) or f"hf:{spec}, hf-vlm:{spec} or hf-dllm:{spec}"
            raise ValueError(
                f"{spec!r} is a Hugging Face model folder (config.json), not a LaViDa checkpoint "
                f"(no policy_config.json); use {hint}"
            )
        raise ValueError(f"{spec!r} is a directory but not a policy checkpoint: no policy_config.json in it")
    cls = checkpoint_class(folder)
    return _construct(cls.from_pretrained, spec, (str(folder),), kw)


def _from_factory(spec: str, kw: dict[str, Any]) -> Any:
    from agents.policy import as_policy

    source, _, attr = spec.rpartition(":")
    module = _import_target(spec, source)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))[:20]
            raise ValueError(f"policy spec {spec!r}: {source!r} has no attribute {attr!r} (it has {public})")
        obj = getattr(obj, part)
    if hasattr(obj, "act") and not inspect.isclass(obj):
        if kw:
            raise ValueError(f"policy spec {spec!r} names a policy object; it takes no options, got {sorted(kw)}")
        return obj
    if not callable(obj):
        raise ValueError(f"policy spec {spec!r}: {attr!r} is a {type(obj).__name__}, not a factory")
    try:
        inspect.signature(obj).bind(**kw)
    except TypeError as exc:
        raise ValueError(
            f"policy spec {spec!r}: cannot call {attr}(**{sorted(kw)}) ({exc}); a factory takes only the options "
            "given to resolve_policy -- to use a function obs -> action, expose a factory that returns it"
        ) from None
    except ValueError:
        pass
    made = obj(**kw)
    if hasattr(made, "act") or callable(made):
        return as_policy(made)
    raise ValueError(
        f"policy spec {spec!r}: {attr}() returned a {type(made).__name__}; expected a Policy (with act) "
        "or a callable obs -> action"
    )


def resolve_policy(spec: str, **kw: Any) -> Any:
    """The :class:`agents.policy.Policy` a command-line spec names (forms in the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"policy spec must be a non-empty string ({SPEC_FORMS}), got {spec!r}")
    spec = spec.strip()
    if spec in _SIMPLE:
        return _construct(_load(f"baselines.simple:{_SIMPLE[spec]}"), spec, (), kw)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in TRAINABLE_HF_PREFIXES:  # trainable HF backbones evaluate as they train (agents.specs)
        from agents.specs import trainable_policy

        return trainable_policy(spec, **kw)
    if sep and prefix in _ADAPTERS:
        if not rest:
            raise ValueError(f"policy spec {spec!r} needs a directory after '{prefix}:'")
        return _construct(_load(_ADAPTERS[prefix]), spec, (rest,), kw)
    if os.path.isdir(spec):
        return _checkpoint(Path(spec), spec, kw)
    if sep and rest and prefix:
        return _from_factory(spec, kw)
    if os.sep in spec or spec.startswith("."):
        raise ValueError(f"policy spec {spec!r}: no such directory (a checkpoint spec must be an existing folder)")
    raise ValueError(f"unknown policy spec {spec!r}; expected one of: {SPEC_FORMS}")
