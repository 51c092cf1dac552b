"""``HFDenoiserBase``: the one denoiser base of the Hugging Face backbones (text A2D/LLaDA/Dream and the VLMs).

A denoiser wraps a backbone as the ``DiffusionModel`` call signature the diffusion policy uses:
``forward(input_ids, pixel_values=None, attention_mask=None) -> .logits`` (B, L, V), logits at
``i`` predicting token ``i``. The base holds what every HF backbone shares:

* positions that count attended tokens only (:func:`keys_and_positions`: left padding changes
  nothing) and the 4-D additive bidirectional mask over the attended keys
  (:func:`agents.hf.kv.additive_mask`; no causal mask anywhere);
* the logits shift of Dream-style backbones (``logits_shift``: logits at ``i`` predict ``i + 1``;
  :meth:`HFDenoiserBase.unshift`, and a cached window that starts one position early);
* the vocabulary limit (:meth:`HFDenoiserBase.limit_vocab`): logits padded to
  ``config.vocab_size``, ids past the tokenizer (``vocab_limit``) get ``NEG_LOGIT``;
* the KV-cache hooks of :class:`agents.diffusion.sampler.CachingModelFn`
  (:meth:`~HFDenoiserBase.encode_with_cache` / :meth:`~HFDenoiserBase.forward_window`) for any
  backbone with the transformers cache API (``DynamicCache``; :mod:`agents.hf.kv`); a denoiser
  whose ``supports_kv_cache`` is False has neither attribute, so the sampler falls back to
  ``cache='none'`` with its one warning.

Subclasses say how token ids become backbone inputs (:meth:`HFDenoiserBase.backbone_inputs`:
``input_ids``, or ``inputs_embeds`` with image features written in, for a VLM).
Special ids of these policies: :func:`text_special_ids` (no ``<boi>``/``<eoi>``, no image codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from agents.diffusion.rows import NEG_LOGIT
from agents.diffusion.tokenizer import SpecialIds
from agents.hf.kv import additive_mask, cache_kwarg, stack_cache, window_cache

__all__ = [
    "DenoiserConfig",
    "HFDenoiserBase",
    "config_vocab_size",
    "embedding_rows",
    "keys_and_positions",
    "text_special_ids",
]


@dataclass
class DenoiserConfig:
    """The fields the diffusion policy reads from its model's config."""

    vocab_size: int
    mask_token_id: int
    num_patches: int = 0
    image_size: int = 1
    image_token_id: int = -1


def text_special_ids(pad: int, eos: int, mask: int, vocab_size: int, image: int | None = None) -> SpecialIds:
    """Special ids of an HF tokenizer: no ``<boi>``/``<eoi>``/``<unk>``, no image codes (an empty code range);
    ``image`` is the VLM's placeholder id (None for text-only backbones)."""
    return SpecialIds(pad=pad, eos=eos, mask=mask, unk=None, image=image, boi=None, eoi=None,
                      code_start=vocab_size, code_end=vocab_size)  # fmt: skip


def config_vocab_size(config: Any, fallback: int) -> int:
    """``config.vocab_size`` (of the text config for a VLM), else ``fallback``; never a weight's shape (0 under ZeRO-3)."""
    text = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else config
    for source in (text, config):
        value = getattr(source, "vocab_size", None)
        if isinstance(value, int) and value > 0:
            return value
    return int(fallback)


def embedding_rows(model: Any) -> int:
    """Rows of ``model``'s input embedding from ``config.vocab_size`` (else the embedding's ``num_embeddings``), never
    from a weight's shape, which is 0 for a parameter partitioned by DeepSpeed ZeRO-3."""
    embedding = model.get_input_embeddings()
    return config_vocab_size(getattr(model, "config", None), int(getattr(embedding, "num_embeddings", 0)))


def keys_and_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attended keys (B, L) bool and position ids counting attended tokens only (left padding changes nothing)."""
    keys = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return keys, (keys.long().cumsum(-1) - 1).clamp(min=0)


class HFDenoiserBase(nn.Module):
    """``forward(input_ids, pixel_values=None, attention_mask=None) -> .logits`` (B, L, V): logits at i predict token i."""

    kind: str = ""
    logits_shift: bool = False
    #: a native backbone's published config.json (saved back in that layout); None otherwise
    published_config: dict[str, Any] | None = None

    def __init__(self, backbone: nn.Module, config: DenoiserConfig, vocab_limit: int) -> None:
        super().__init__()
        self.backbone, self.config, self.vocab_limit = backbone, config, int(vocab_limit)

    # ----- what subclasses change -----------------------------------------------------------
    @property
    def supports_kv_cache(self) -> bool:
        """Whether the backbone takes a transformers ``DynamicCache`` (so the cache hooks exist)."""
        return True

    def backbone_inputs(self, input_ids: torch.Tensor, pixel_values: Any = None) -> dict[str, torch.Tensor]:
        """The backbone's token inputs for ``input_ids``: ``{"input_ids": ...}`` (VLMs: ``inputs_embeds``)."""
        return {"input_ids": input_ids}

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    # ----- forward ----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, pixel_values: Any = None, attention_mask: torch.Tensor | None = None) -> Any:
        """Bidirectional logits (B, L, V) over ``input_ids``; tokens past the tokenizer get ``NEG_LOGIT``."""
        keys, positions = keys_and_positions(input_ids, attention_mask)
        out = self.backbone(**self.backbone_inputs(input_ids, pixel_values), attention_mask=self.key_mask(keys),
                            position_ids=positions, use_cache=False)  # fmt: skip
        return SimpleNamespace(logits=self.limit_vocab(self.unshift(_logits(out))))

    def key_mask(self, keys: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """The (B, 1, queries, K) additive mask over the attended ``keys`` (B, K), in the backbone's dtype."""
        return additive_mask(keys, keys.shape[1] if queries is None else queries, self._dtype)

    def unshift(self, logits: torch.Tensor) -> torch.Tensor:
        """Shifted logits (``logits_shift``: i predicts i + 1, Dream) moved to predict their own position (0 keeps its own)."""
        return torch.cat([logits[:, :1], logits[:, :-1]], 1) if self.logits_shift else logits

    def limit_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (float) padded to ``config.vocab_size``; ids past the tokenizer (``vocab_limit``) get ``NEG_LOGIT``."""
        logits = logits.float()
        if logits.shape[-1] < self.config.vocab_size:
            logits = nn.functional.pad(logits, (0, self.config.vocab_size - logits.shape[-1]), value=NEG_LOGIT)
        if self.vocab_limit < logits.shape[-1]:
            logits[..., self.vocab_limit :] = NEG_LOGIT
        return logits

    # ----- KV cache (agents.diffusion.sampler.CachingModelFn) ---------------------------------
    @property
    def encode_with_cache(self) -> Any:
        """``(input_ids, pixel_values=None, attention_mask=None) -> (logits (B, L, V), cache)`` (cache-capable backbones)."""
        if not self.supports_kv_cache:
            raise AttributeError(f"{self.kind} backbones decode without a KV cache (no encode_with_cache)")
        return self._encode_with_cache

    @property
    def forward_window(self) -> Any:
        """``(input_ids, attention_mask, start, end, cache) -> logits (B, end-start, V)`` (cache-capable backbones)."""
        if not self.supports_kv_cache:
            raise AttributeError(f"{self.kind} backbones decode without a KV cache (no forward_window)")
        return self._forward_window

    @torch.no_grad()
    def _encode_with_cache(
        self, input_ids: torch.Tensor, pixel_values: Any = None, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A full bidirectional forward: logits (B, L, V) and every layer's keys/values (B, layers, 2, H, L, D)."""
        from transformers import DynamicCache

        keys, positions = keys_and_positions(input_ids, attention_mask)
        out = self.backbone(**self.backbone_inputs(input_ids, pixel_values), attention_mask=self.key_mask(keys),
                            position_ids=positions, use_cache=True, **{cache_kwarg(self.backbone): DynamicCache()})  # fmt: skip
        cache = getattr(out, "cache", None)
        cache = getattr(out, "past_key_values", None) if cache is None else cache
        return self.limit_vocab(self.unshift(_logits(out))), stack_cache(cache, input_ids.shape[1])

    @torch.no_grad()
    def _forward_window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, start: int, end: int, cache: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, end-start, V) of positions ``start:end`` from their current tokens, attending to the cached
        keys/values of every other position (``cache`` from :meth:`encode_with_cache` on the same rows)."""
        keys, positions = keys_and_positions(input_ids, attention_mask)
        if cache.shape[0] != input_ids.shape[0] or cache.shape[-2] != input_ids.shape[1]:
            raise ValueError(
                f"cache of shape {tuple(cache.shape)} does not fit input_ids {tuple(input_ids.shape)}: "
                "pass the rows' own cache from encode_with_cache"
            )
        first = max(start - 1, 0) if self.logits_shift else start  # shifted logits: position i's come from i - 1
        order = torch.cat([keys[:, :first], keys[:, end:], keys[:, first:end]], 1)  # cache: prefix, suffix, then window
        out = self.backbone(**self.backbone_inputs(input_ids[:, first:end]), attention_mask=self.key_mask(order, end - first),
                            position_ids=positions[:, first:end], use_cache=True,
                            **{cache_kwarg(self.backbone): window_cache(cache, first, end)})  # fmt: skip
        logits = _logits(out)
        if self.logits_shift:
            logits = self.unshift(logits) if first == 0 else logits[:, :-1]
        return self.limit_vocab(logits)


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out[0]
