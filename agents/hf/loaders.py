"""One loader per kind of Hugging Face folder, for :meth:`agents.hf.policy.HFDiffusionPolicy.from_hf`.

:func:`pick_loader` chooses, from the requested kind and the folder's ``config.json``, one of:
:func:`load_a2d` (a causal LM run bidirectionally, a mask token added when it has none),
:func:`load_native_dream` / :func:`load_native_llada` (published Dream / LLaDA weights in
transformers' modules, no remote code), :func:`load_masked_lm` (``AutoModelForMaskedLM``, BERT-like)
and :func:`load_remote_code` (``auto_map['AutoModel']``, only with ``trust_remote_code``). Each
returns a :class:`Loaded` backbone and mask id, or raises naming the folder and the fix
(docs/design.md, "Layers", ``agents/hf``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

from agents.hf.attention import bidirectional_attn_implementation
from agents.hf.denoiser import embedding_rows
from agents.hf.dream import is_dream, load_dream
from agents.hf.llada import LLaDAModelLM, is_llada
from agents.hf.remote_code import check_remote_code

__all__ = ["ADDED_MASK", "Loaded", "Source", "hf_folder", "mask_id_of", "pick_loader"]

#: the mask token added to an A2D (or VLM) tokenizer that has none
ADDED_MASK = "<|mdm_mask|>"


def hf_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder holding ``config.json``; raises naming it otherwise."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a directory (an HF model folder with config.json is needed)")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} has no config.json: not a Hugging Face model folder")
    return folder


def mask_id_of(explicit: int | None, config: Any, tokenizer: Any, folder: Path) -> int | None:
    """The mask id: ``explicit``, else ``config.mask_token_id``, else the tokenizer's; checked against the vocabulary."""
    for source, value in (("mask_token_id=", explicit), ("config.mask_token_id", getattr(config, "mask_token_id", None)),
                          ("tokenizer.mask_token_id", tokenizer.mask_token_id)):  # fmt: skip
        if value is not None:
            vocab = getattr(config, "vocab_size", None)
            if vocab is not None and not 0 <= int(value) < int(vocab):
                raise ValueError(f"{source} = {value} is outside the vocabulary of {vocab} tokens in {str(folder)!r}")
            return int(value)
    return None


@dataclass
class Source:
    """What every loader reads: the folder, its raw ``config.json``, the tokenizer and ``from_hf``'s options."""

    folder: Path
    raw: dict[str, Any]
    tokenizer: Any
    mask_token_id: int | None
    dtype: Any
    seed: int
    trust_remote_code: bool

    @property
    def auto_map(self) -> dict[str, Any]:
        """The config's ``auto_map`` (empty when it has none)."""
        return self.raw.get("auto_map") or {}

    @property
    def model_type(self) -> str:
        """The config's ``model_type``."""
        return str(self.raw.get("model_type", ""))

    @property
    def extra(self) -> dict[str, Any]:
        """``from_pretrained`` keywords every transformers loader gets (the dtype when one was asked for)."""
        return {"dtype": self.dtype} if self.dtype is not None else {}

    def is_causal(self) -> bool:
        """Whether transformers knows the folder's ``model_type`` as a causal LM."""
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return self.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    def require_mask(self, config: Any, what: str) -> int:
        """:func:`mask_id_of` for ``config``; raises naming the folder when there is none."""
        mask = mask_id_of(self.mask_token_id, config, self.tokenizer, self.folder)
        if mask is None:
            raise ValueError(f"no mask token for {what} in {str(self.folder)!r}: config.json has no mask_token_id and the "
                             "tokenizer no mask token; pass mask_token_id=")  # fmt: skip
        return mask


@dataclass
class Loaded:
    """A loaded backbone, its mask id, the published config it keeps (native kinds) and whether it runs remote code."""

    backbone: nn.Module
    mask: int
    published: dict[str, Any] | None = None
    remote: bool = False


def load_a2d(src: Source) -> Loaded:
    """A causal LM folder (``hf-a2d:``) with sdpa/eager attention; a seeded mask-token row is added when it has none."""
    from transformers import AutoModelForCausalLM

    if not src.is_causal():
        raise ValueError(
            f"{str(src.folder)!r} (model_type {src.model_type!r}) is not a causal LM transformers knows; hf-a2d: needs one "
            f"(e.g. llama, qwen2, qwen3); a masked-diffusion folder goes under hf-dllm:"
        )
    extra = src.extra
    attn = bidirectional_attn_implementation(src.raw, src.folder)
    extra.update({"attn_implementation": attn} if attn else {})
    backbone = AutoModelForCausalLM.from_pretrained(str(src.folder), local_files_only=True, **extra)
    tokenizer = src.tokenizer
    mask = mask_id_of(src.mask_token_id, SimpleNamespace(), tokenizer, src.folder)
    if mask is None:
        tokenizer.add_special_tokens({"mask_token": ADDED_MASK})
        mask = tokenizer.mask_token_id
    if len(tokenizer) > embedding_rows(backbone):  # config.vocab_size (a ZeRO-3 weight has shape 0)
        with torch.random.fork_rng(devices=[]):  # the new mask row's random init: fixed by seed (train == eval)
            torch.manual_seed(src.seed)
            backbone.resize_token_embeddings(len(tokenizer))
    return Loaded(backbone, mask)


def load_native_dream(src: Source) -> Loaded:
    """Dream's published weights in transformers' Qwen2 modules (no remote code); keeps Dream's config."""
    backbone = load_dream(src.folder, src.raw, src.dtype)
    return Loaded(backbone, src.require_mask(SimpleNamespace(**src.raw), "Dream"), published=src.raw)


def load_native_llada(src: Source) -> Loaded:
    """LLaDA's published config keys and weights in transformers' Llama modules (no remote code); keeps its config."""
    backbone = LLaDAModelLM.from_published(src.folder, src.dtype)
    return Loaded(backbone, src.require_mask(SimpleNamespace(**src.raw), "LLaDA"), published=src.raw)


def load_masked_lm(src: Source) -> Loaded:
    """A masked LM transformers knows (``AutoModelForMaskedLM``: BERT, ModernBERT, ...)."""
    from transformers import AutoModelForMaskedLM

    backbone = AutoModelForMaskedLM.from_pretrained(str(src.folder), local_files_only=True, **src.extra)
    return Loaded(backbone, src.require_mask(backbone.config, "the masked LM"))


def load_remote_code(src: Source) -> Loaded:
    """A folder whose ``auto_map['AutoModel']`` code builds the model; runs only with ``trust_remote_code``."""
    from transformers import AutoConfig, AutoModel

    folder = str(src.folder)
    if not src.auto_map.get("AutoModel"):
        hint = " It is a causal LM: use hf-a2d: to run it as masked diffusion." if src.is_causal() else ""
        raise ValueError(
            f"{folder!r} is not a masked-diffusion LM folder: its config.json has no auto_map['AutoModel'] "
            f"(the remote code LLaDA/Dream checkpoints ship).{hint}"
        )
    if not src.trust_remote_code:
        raise ValueError(
            f"{folder!r} runs its own model code ({src.auto_map['AutoModel']}); pass trust_remote_code=True "
            "(--trust_remote_code true / trust_remote_code: true) if you trust it"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
    mask = src.require_mask(config, "the diffusion LM")
    check_remote_code(folder, config, src.auto_map["AutoModel"])  # every incompatibility in one message
    try:
        backbone = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=True, **src.extra)
    except AttributeError as exc:
        if "all_tied_weights_keys" in str(exc):
            raise ValueError(
                f"{folder!r}: its remote code does not call self.post_init() in __init__, which this "
                "transformers version needs (LLaDA's published code; transformers >= 5.3); add "
                "self.post_init() at the end of the model's __init__ or install transformers<5.3"
            ) from exc
        raise
    return Loaded(backbone, mask, remote=True)


def pick_loader(kind: str, src: Source) -> Callable[[Source], Loaded]:
    """The loader for ``kind`` (``a2d`` | ``dream`` | ``llada``, already resolved from ``auto``) on this folder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if kind == "a2d":
        return load_a2d
    if kind == "dream" and is_dream(src.raw):
        return load_native_dream
    if kind == "llada" and is_llada(src.raw):
        return load_native_llada
    if kind == "llada" and not src.auto_map.get("AutoModel") and src.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return load_masked_lm
    return load_remote_code
