"""The checks ``hf-dgemma:DIR`` runs on a folder's ``config.json`` before transformers reads it.

transformers fills a missing sub-config with defaults and fails later, deep in the model build,
with a message that names neither the file nor the field (a ``config.json`` without
``text_config`` ends in ``empty(): argument 'size' ... NoneType``). Here each problem is one
``ValueError`` naming the file, the field, the value found and what a DiffusionGemma folder has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MODEL_TYPE", "check_dgemma_config"]

MODEL_TYPE = "diffusion_gemma"
#: sub-config -> integer fields (>= 1) the policy and the model build read
REQUIRED: dict[str, tuple[str, ...]] = {
    "text_config": ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"),
    "vision_config": ("hidden_size", "num_hidden_layers", "patch_size"),
}
#: top-level token ids the prompt layout uses (when set, they must index the vocabulary)
TOKEN_IDS = ("image_token_id", "boi_token_id", "eoi_token_id")


def check_dgemma_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict, checked (module docstring); a ``ValueError`` names the file and field."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); a DiffusionGemma config.json is one JSON object") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a config.json is one JSON object, got {type(config).__name__}")
    if config.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{path}: model_type is {config.get('model_type')!r}; hf-dgemma: needs {MODEL_TYPE!r} "
                         "(a DiffusionGemmaForBlockDiffusion checkpoint)")  # fmt: skip
    for name, keys in REQUIRED.items():
        sub = config.get(name)
        if not isinstance(sub, dict):
            raise ValueError(f"{path}: {name} is {sub!r}; a DiffusionGemma config.json has a {name} object")
        for key in keys:
            value = sub.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{path}: {name}.{key} is {value!r}; it must be an int >= 1")
    vocab = config["text_config"]["vocab_size"]
    for key in TOKEN_IDS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab):
            raise ValueError(f"{path}: {key} is {value!r}; it must index text_config.vocab_size ({vocab}) tokens")
    return config
