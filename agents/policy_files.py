"""Checks of a saved policy's files before they are loaded (docs/design.md, "Training").

:func:`check_policy_files` raises ``FileNotFoundError`` naming a missing ``config.json`` or
weight shard and :class:`agents.state_codec.CheckpointError` naming a cut-off or invalid JSON or
safetensors file, so a truncated checkpoint fails with the file's name, not deep in a loader.
"""

from __future__ import annotations

import json
import os

from agents.state_codec import CheckpointError

__all__ = ["check_policy_files", "model_code_files", "require_code_trust"]


def model_code_files(path: str) -> list[str]:
    """The model code a folder carries (``modeling_*.py`` / ``configuration_*.py`` at its top, sorted)."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(".py") and n.startswith(("modeling_", "configuration_")))


def require_code_trust(path: str, trust_remote_code: bool, flag: str) -> None:
    """Refuse (``CheckpointError``) a ``flag`` folder that carries model code unless this command passed
    ``--trust_remote_code true``: a checkpoint's code is never trusted because the run that wrote it was."""
    files = model_code_files(path)
    if files and not trust_remote_code:
        raise CheckpointError(
            f"{flag} {path!r} carries model code ({', '.join(files)}); it runs only when this command passes "
            "--trust_remote_code true (trust given to the run that wrote it does not carry over): check the files, "
            "then pass the flag, or delete them if the backbone loads natively"
        )


def check_policy_files(path: str) -> None:
    """Raise naming the file if a saved policy's ``config.json``, weights or tokenizer JSON is missing or cut off."""
    fix = "the checkpoint is truncated or corrupt: save the policy again or use another checkpoint"
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{config} not found: {path!r} is not a complete saved policy; {fix}")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                with open(file, encoding="utf-8") as f:
                    json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{file}: not valid JSON ({exc}); {fix}") from None
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({type(exc).__name__}: {exc}); {fix}") from None
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        shards = ["model.safetensors"]
    else:
        return  # other weight formats: left to the model's own loader
    from safetensors import SafetensorError, safe_open

    for shard in shards:
        file = os.path.join(path, shard)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file} not found (listed in {index}); {fix}")
        try:
            with safe_open(file, framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file}: not a complete safetensors file ({exc}); {fix}") from None
