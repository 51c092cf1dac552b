"""``DGemmaDenoiser``: transformers' ``DiffusionGemmaForBlockDiffusion`` as an encoder cache plus a canvas decoder.

DiffusionGemma is an encoder-decoder over one sequence: a causal encoder (Gemma-4 text layers
and vision tower) writes the keys/values of the prompt (and of finished response blocks) into a
``DynamicCache``; a bidirectional decoder sharing its weights denoises a canvas of at most
``canvas_length`` tokens, reading that cache without changing it, and self-conditioned on the
previous step's logits. So one encoder pass serves every denoising step of a block (the KV
cache reuse of transformers' own ``generate``) and every likelihood pass of a batch.

* :meth:`DGemmaDenoiser.encode` / :meth:`extend` -- the encoder over ``[left padding, prompt]``
  (with the image) or over one more finished block appended to the cache; position ids count
  attended tokens only, so left padding changes nothing.
* :meth:`decode` -- canvas logits (n, C, V), attending to the cached columns before
  ``block_col`` that are not padding, plus the whole canvas.
* :meth:`encode_full` -- the encoder over whole ``[prompt, response]`` rows (the likelihood),
  with the encoder's own next-token logits (the recipe's AR co-loss).

Masks are built here (additive float, one per layer type): the encoder is causal (bidirectional
when the text config says ``use_bidirectional_attention: all``); sliding-window layers see the
last ``sliding_window`` columns in the encoder and, in the decoder, cache positions within
``sliding_window`` of the canvas start. The cache keeps every column, so rollouts (prompt, then
blocks appended) and the likelihood (whole rows at once) see exactly the same keys.
``pixel_values`` are the image processor's patches with the patch (x, y) positions appended as
two float columns (one tensor per row survives row selection and concatenation of rollouts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["DGemmaConfig", "DGemmaDenoiser", "pack_pixels"]


@dataclass
class DGemmaConfig:
    """The fields the policy reads from its model (``num_patches``: image soft tokens per prompt)."""

    vocab_size: int
    canvas_length: int
    image_token_id: int
    boi_token_id: int
    eoi_token_id: int
    num_patches: int
    image_size: int = 1


def pack_pixels(pixel_values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(N, P, D + 2) float: patches with their (x, y) positions appended (unpacked by :meth:`DGemmaDenoiser.encode`)."""
    return torch.cat([pixel_values.float(), positions.float()], -1)


def _positions(attention: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Position ids (n, L - start) of columns ``start:`` counting attended columns only."""
    return (attention.long().cumsum(-1) - 1).clamp(min=0)[:, start:]


class DGemmaDenoiser(nn.Module):
    """The policy's ``model``: ``backbone`` (a possibly peft-wrapped ``DiffusionGemmaForBlockDiffusion``) and its config."""

    kind = "dgemma"

    def __init__(self, backbone: nn.Module, vocab_limit: int, num_patches: int) -> None:
        super().__init__()
        self.backbone = backbone
        c = backbone.config
        self.vocab_limit = int(vocab_limit)
        self.config = DGemmaConfig(vocab_size=int(c.text_config.vocab_size), canvas_length=int(c.canvas_length),
                                   image_token_id=int(c.image_token_id), boi_token_id=int(c.boi_token_id),
                                   eoi_token_id=int(c.eoi_token_id), num_patches=int(num_patches))  # fmt: skip

    @property
    def inner(self) -> nn.Module:
        """The transformers model (LoRA layers, when attached, are inside it)."""
        b = self.backbone
        return b.get_base_model() if callable(getattr(b, "get_base_model", None)) else b

    @property
    def _text(self) -> Any:
        return self.inner.config.text_config

    def _dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def _masks(self, allowed: torch.Tensor, sliding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive (n, 1, q, k) masks per layer type from bool ``allowed`` and the sliding-window subset ``sliding``."""
        dtype, low = self._dtype(), torch.finfo(self._dtype()).min
        out = {}
        for kind, ok in (("full_attention", allowed), ("sliding_attention", allowed & sliding)):
            out[kind] = torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, low)[:, None]
        return out

    def _encoder_masks(self, attention: torch.Tensor, past: int) -> dict[str, torch.Tensor]:
        """Masks of query columns ``past:`` over key columns ``:L`` of ``attention`` (n, L) (module docstring)."""
        length = attention.shape[1]
        q = torch.arange(past, length, device=attention.device)[:, None]
        k = torch.arange(length, device=attention.device)[None, :]
        order = k <= q if self._text.use_bidirectional_attention != "all" else torch.ones_like(k <= q)
        allowed = (attention[:, None, :] & order[None]) | (q == k)[None]  # a padding query sees itself (no NaN)
        sliding = (q - k < int(self._text.sliding_window))[None].expand_as(allowed)
        return self._masks(allowed, sliding | (q == k)[None])

    def _run_encoder(self, ids, attention, past, cache, pixel_values=None) -> Any:
        kwargs: dict[str, Any] = {}
        if pixel_values is not None and bool((ids == self.config.image_token_id).any()):
            rows = (ids == self.config.image_token_id).any(1)
            packed = pixel_values.to(ids.device)[rows]
            kwargs = {"pixel_values": packed[..., :-2].to(self._dtype()), "image_position_ids": packed[..., -2:].round().long()}
        return self.inner.model.encoder(input_ids=ids, attention_mask=self._encoder_masks(attention, past),
                                        position_ids=_positions(attention, past), cache=cache, **kwargs)  # fmt: skip

    def encode(self, ids: torch.Tensor, attention: torch.Tensor, pixel_values: torch.Tensor | None = None) -> Any:
        """A fresh cache holding the encoder keys/values of ``ids`` (n, L) (left-padded; ``attention`` (n, L) bool)."""
        from transformers import DynamicCache

        return self._run_encoder(ids, attention.bool(), 0, DynamicCache(), pixel_values).cache

    def extend(self, cache: Any, block: torch.Tensor, attention: torch.Tensor) -> Any:
        """``cache`` with the encoder keys/values of ``block`` (n, C) appended; ``attention`` (n, past + C) covers both."""
        return self._run_encoder(block, attention.bool(), attention.shape[1] - block.shape[1], cache).cache

    def encode_full(self, ids: torch.Tensor, attention: torch.Tensor, pixel_values: torch.Tensor | None,
                    ar_logits: bool) -> tuple[Any, torch.Tensor | None]:  # fmt: skip
        """The cache of whole rows and, if ``ar_logits``, the encoder's next-token logits (n, L, V) (softcapped as the head)."""
        from transformers import DynamicCache

        out = self._run_encoder(ids, attention.bool(), 0, DynamicCache(), pixel_values)
        if not ar_logits:
            return out.cache, None
        return out.cache, self._head(out.last_hidden_state)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        cap = self.inner.final_logit_softcapping
        logits = self.inner.lm_head(hidden).float()
        return torch.tanh(logits / cap) * cap if cap else logits

    def decode(self, canvas: torch.Tensor, cache: Any, attention: torch.Tensor, block_col: int | None = None,
               sc_logits: torch.Tensor | None = None, sc_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Canvas logits (n, C, V) (float); the cache has ``attention.shape[1]`` columns, of which ``:block_col`` are context."""
        n, width = canvas.shape
        cols = attention.shape[1]
        block_col = cols if block_col is None else int(block_col)
        context = attention.bool() & (torch.arange(cols, device=canvas.device) < block_col)[None]
        start = context.long().sum(-1, keepdim=True)  # (n, 1): the canvas's first position id
        key_pos = torch.cat([_positions(attention), start + torch.arange(width, device=canvas.device)], 1)
        allowed = torch.cat([context, torch.ones(n, width, dtype=torch.bool, device=canvas.device)], 1)
        allowed = allowed[:, None, :].expand(n, width, cols + width)
        sliding = (key_pos[:, None, :] > start[:, :, None] - int(self._text.sliding_window)) | (
            torch.arange(cols + width, device=canvas.device) >= cols
        )  # fmt: skip
        out = self.inner(input_ids=None, cache=cache, decoder_input_ids=canvas, self_conditioning_logits=sc_logits,
                         self_conditioning_mask=sc_mask, decoder_attention_mask=self._masks(allowed, sliding.expand_as(allowed)),
                         decoder_position_ids=start + torch.arange(width, device=canvas.device))  # fmt: skip
        return out.logits.float()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The backbone's own forward (the trainer and accelerate call parameters through ``model``)."""
        return self.backbone(*args, **kwargs)
