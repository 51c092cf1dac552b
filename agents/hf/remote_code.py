"""What a remote-code model folder needs from the installed transformers, checked before it loads (issue 21).

Model code that ships beside its weights (``auto_map``) was written for one transformers version;
on another it fails one incompatibility at a time, deep inside ``from_pretrained`` or at the first
forward. :func:`remote_code_problems` finds, before any weight is read, every one of the breaks
seen with published diffusion LMs (LLaDA-8B's code on transformers 5), so the user gets them in
one message (:func:`check_remote_code`):

* ``post_init()`` not called in ``__init__`` (transformers >= 5.3 reads what it sets:
  ``all_tied_weights_keys``) -- found by building the model on the meta device;
* a ``tie_weights`` override that does not take the keywords transformers passes
  (``missing_keys``, ``recompute_mapping`` in 5.x) -- read from the two signatures;
* ``config.use_cache`` read by the model code while its config class no longer gets it from
  ``PretrainedConfig`` -- read from the code's source and the loaded config;
* any other error while building the model (named with its type).
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

import torch

__all__ = ["check_remote_code", "remote_code_problems"]


def _remote_classes(cls: type) -> list[type]:
    """The classes of ``cls``'s MRO that come from remote code (``transformers_modules``), not transformers or torch."""
    return [k for k in cls.__mro__ if str(getattr(k, "__module__", "")).startswith("transformers_modules")]


def _tie_weights_problem(cls: type) -> str | None:
    from transformers import PreTrainedModel

    wanted = [n for n in inspect.signature(PreTrainedModel.tie_weights).parameters if n != "self"]
    for klass in _remote_classes(cls):
        if "tie_weights" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["tie_weights"]).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        missing = [n for n in wanted if n not in params]
        if missing:
            call = ", ".join(f"{n}=..." for n in wanted)
            return (f"{klass.__name__}.tie_weights{inspect.signature(vars(klass)['tie_weights'])} does not take "
                    f"{missing}, which this transformers passes (tie_weights({call})): add them or **kwargs")  # fmt: skip
        return None
    return None


def _use_cache_problem(cls: type, config: Any) -> str | None:
    if hasattr(config, "use_cache"):
        return None
    for module in {sys.modules.get(k.__module__) for k in _remote_classes(cls)} - {None}:
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            continue
        if re.search(r"config\.use_cache\b", source):
            return (f"{type(config).__name__} has no use_cache, which the model code reads (config.use_cache in "
                    f"{module.__name__.rpartition('.')[2]}.py; PretrainedConfig no longer sets it): set self.use_cache "
                    "in the config's __init__")  # fmt: skip
    return None


def _build_problem(cls: type, config: Any) -> str | None:
    try:
        with torch.device("meta"):
            model = cls(config)
    except Exception as exc:  # noqa: BLE001 -- any failure of the remote __init__ is reported, not raised here
        return f"building {cls.__name__}(config) fails: {type(exc).__name__}: {str(exc)[:300]}"
    if not hasattr(model, "all_tied_weights_keys"):
        return (f"{cls.__name__}.__init__ does not call self.post_init(), which this transformers needs (>= 5.3): add "
                "self.post_init() at the end of the model's __init__")  # fmt: skip
    return None


def remote_code_problems(folder: str, config: Any, class_ref: str) -> list[str]:
    """Every incompatibility found between ``class_ref`` (an ``auto_map`` entry of ``folder``) and the installed
    transformers; empty when none is found. Imports the folder's code: call only under ``trust_remote_code``."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        cls = get_class_from_dynamic_module(class_ref, folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 -- an import error of the remote code is one of the problems
        return [f"importing {class_ref} fails: {type(exc).__name__}: {str(exc)[:300]}"]
    build, tie = _build_problem(cls, config), _tie_weights_problem(cls)
    if build and tie and "tie_weights" in build:  # post_init calls tie_weights: the same break, named once
        build = None
    return [p for p in (build, tie, _use_cache_problem(cls, config)) if p]


def check_remote_code(folder: str, config: Any, class_ref: str) -> None:
    """Raise one ``ValueError`` listing every problem :func:`remote_code_problems` finds (none: return)."""
    import transformers

    problems = remote_code_problems(folder, config, class_ref)
    if problems:
        items = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        written = getattr(config, "transformers_version", None)
        other = written and written != transformers.__version__
        hint = f", or install the transformers it was written for ({written})" if other else ""
        raise ValueError(f"{folder!r}: its remote code ({class_ref}) does not run on the installed transformers "
                         f"{transformers.__version__}: {items}. Fix them in the folder's code{hint}")  # fmt: skip
