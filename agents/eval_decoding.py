"""Trained checkpoints evaluate greedily by default; the decoding they were trained with is kept beside it.

A policy's ``save_pretrained`` writes its current decoding settings to ``policy_config.json``
``decoding``, and ``from_pretrained`` (so ``lavida eval --policy DIR``) decodes with them. A
policy leaving the trainer samples at its training temperature (RL: 1.0), which makes a plain
before/after evaluation compare a sampled RL policy against a greedy baseline. So every
checkpoint the trainer writes goes through :func:`write_eval_decoding`: ``decoding`` becomes
the evaluation decoding (the training settings with :data:`EVAL_DECODING` applied: greedy,
``temperature`` 0) and ``training_decoding`` keeps the training settings unchanged.
``lavida eval --policy DIR --policy-kwargs temperature=1.0`` evaluates as trained, and the
trainer itself always sets its decoding from its config, so a resumed or ``init_from`` run
samples as configured, not greedily.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["EVAL_DECODING", "TRAINING_DECODING_KEY", "describe_checkpoint_decoding", "write_eval_decoding"]

#: What the evaluation decoding changes in the training decoding.
EVAL_DECODING: dict[str, Any] = {"temperature": 0.0}
#: ``policy_config.json`` key holding the decoding the checkpoint was trained with.
TRAINING_DECODING_KEY = "training_decoding"
_POLICY_CONFIG = "policy_config.json"


def write_eval_decoding(path: str) -> None:
    """Rewrite ``path/policy_config.json``: ``decoding`` -> greedy evaluation decoding, training one kept."""
    meta_path = os.path.join(path, _POLICY_CONFIG)
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if not isinstance(meta, dict) or not isinstance(meta.get("decoding"), dict):
        raise ValueError(f"{meta_path}: no 'decoding' object to derive the evaluation decoding from")
    training = dict(meta["decoding"])
    meta[TRAINING_DECODING_KEY] = training
    meta["decoding"] = {**training, **EVAL_DECODING}
    tmp = meta_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, meta_path)


def describe_checkpoint_decoding(meta: dict[str, Any], overrides: dict[str, Any]) -> str:
    """One line saying which decoding a checkpoint with ``policy_config.json`` ``meta`` is evaluated with."""
    saved = meta.get("decoding") if isinstance(meta.get("decoding"), dict) else {}
    training = meta.get(TRAINING_DECODING_KEY)
    used = {**saved, **overrides}
    temperature = used.get("temperature")
    kind = "greedy" if temperature == 0 else f"sampling at temperature {temperature}"
    if overrides:
        source = f"the checkpoint's saved decoding with --policy-kwargs {overrides}"
    elif isinstance(training, dict):
        source = "the checkpoint's evaluation decoding"
    else:
        source = "the checkpoint's saved decoding (an older checkpoint: it is the training decoding)"
    line = f"decoding: {kind} ({source})"
    if isinstance(training, dict):
        line += f"; trained with temperature {training.get('temperature')} (--policy-kwargs temperature=... to change)"
    elif not overrides and temperature:
        line += "; pass --policy-kwargs temperature=0 for greedy decoding"
    return line
