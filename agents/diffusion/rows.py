"""Row bookkeeping of the diffusion policy: grouping by layout, padding, row tags, constraints.

Contract:

* :class:`RowBatch` holds one prompt, response layout and forced suffix per output row;
  ``groups()`` splits rows by layout (one sampler call each) and ``group_inputs`` builds a
  group's tagged, left-padded prompt tensors and forced templates.
* Row tags: column 0 of every tensor handed to a model function holds the row's index in
  the batch, with attention mask 0 (the model never sees it: it is replaced by ``<pad>``).
  :func:`tagged_model_fn` reads it back, so images and per-position vocabulary
  constraints follow rows through any subset or reordering a sampler or estimator makes.
* :func:`assemble` lays every row out as ``[<pad>..., prompt, response]`` (left-padded to
  a common length) and returns a :class:`agents.policy.Rollouts` with the masks filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from agents.diffusion.layout import ResponseLayout
from agents.diffusion.model import DiffusionModel
from agents.diffusion.tokenizer import SpecialIds
from agents.policy import Rollouts

__all__ = ["NEG_LOGIT", "RowBatch", "TaggedModelFn", "assemble", "tagged_model_fn", "with_tags"]

#: Logit given to tokens a position may not hold (finite, so no NaN in softmax or CE).
NEG_LOGIT = -1e9


@dataclass
class RowBatch:
    """Per-row prompt ids, response layout and forced-suffix ids."""

    prompts: list[list[int]]
    layouts: list[ResponseLayout]
    suffixes: list[list[int] | None]

    def __len__(self) -> int:
        return len(self.prompts)

    def groups(self) -> dict[ResponseLayout, list[int]]:
        """Row indices by layout, in first-seen order."""
        out: dict[ResponseLayout, list[int]] = {}
        for row, layout in enumerate(self.layouts):
            out.setdefault(layout, []).append(row)
        return out

    def group_inputs(self, rows: list[int], ids: SpecialIds):
        """Tagged prompts (n, 1+P), attention (n, 1+P), forced ids/mask (n, R), code/response masks (N, 1+P+R).

        The code and response masks have one row per row of the whole batch (False outside
        ``rows``), indexed by tag, as :func:`tagged_model_fn` expects.
        """
        layout = self.layouts[rows[0]]
        width = max(len(self.prompts[r]) for r in rows)
        prompt_ids = torch.full((len(rows), 1 + width), ids.pad, dtype=torch.long)
        attention = torch.zeros(len(rows), 1 + width, dtype=torch.bool)
        forced_ids = torch.empty(len(rows), layout.length, dtype=torch.long)
        forced_mask = torch.empty(len(rows), layout.length, dtype=torch.bool)
        code_mask = torch.zeros(len(self), 1 + width + layout.length, dtype=torch.bool)
        response_mask = torch.zeros_like(code_mask)
        response_mask[rows, 1 + width :] = True
        for k, row in enumerate(rows):
            prompt = self.prompts[row]
            prompt_ids[k, 0] = row
            prompt_ids[k, 1 + width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention[k, 1 + width - len(prompt) :] = True
            forced_ids[k], forced_mask[k], code_mask[row, 1 + width :] = layout.template(ids, self.suffixes[row])
        return prompt_ids, attention, forced_ids, forced_mask, code_mask, response_mask


def assemble(
    batch: RowBatch, responses: list[torch.Tensor], records: list[torch.Tensor], ids: SpecialIds
) -> Rollouts:
    """Left-padded ``[prompt, response]`` rows with masks; texts/actions are left empty."""
    lengths = [len(p) + layout.length for p, layout in zip(batch.prompts, batch.layouts)]
    n, width = len(batch), max(lengths, default=0)
    sequences = torch.full((n, width), ids.pad, dtype=torch.long)
    attention = torch.zeros(n, width, dtype=torch.bool)
    response_mask = torch.zeros(n, width, dtype=torch.bool)
    forced_mask = torch.zeros(n, width, dtype=torch.bool)
    code_mask = torch.zeros(n, width, dtype=torch.bool)
    unmask_step = torch.full((n, width), -1, dtype=torch.long)
    for row, (prompt, layout) in enumerate(zip(batch.prompts, batch.layouts)):
        start, resp = width - lengths[row], width - layout.length
        sequences[row, start:resp] = torch.tensor(prompt, dtype=torch.long)
        sequences[row, resp:] = responses[row]
        attention[row, start:] = True
        response_mask[row, resp:] = True
        _, forced_mask[row, resp:], code_mask[row, resp:] = layout.template(ids, batch.suffixes[row])
        unmask_step[row, resp:] = records[row]
    return Rollouts(
        sequences=sequences,
        response_mask=response_mask,
        prompt_index=torch.arange(n),
        texts=[],
        actions=[],
        attention_mask=attention,
        unmask_step=unmask_step,
        forced_mask=forced_mask,
        extras={"code_mask": code_mask},
    )


def with_tags(sequences: torch.Tensor, attention: torch.Tensor, *masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``sequences``, ``attention`` and each bool (B, L) mask with a leading tag column (row index, unattended, False)."""
    n = sequences.shape[0]
    tags = torch.arange(n, dtype=torch.long, device=sequences.device)[:, None]
    false = torch.zeros(n, 1, dtype=torch.bool, device=sequences.device)
    return (torch.cat([tags, sequences], 1), *(torch.cat([false, m.bool()], 1) for m in (attention, *masks)))


class TaggedModelFn:
    """``model_fn(input_ids, attention_mask) -> logits`` over tagged rows with vocabulary constraints.

    ``pixel_values`` (N, 3, S, S) and ``code_mask`` / ``response_mask`` (N, L) are indexed by
    the tag in column 0. Code positions may only hold image codes; the other response
    positions never hold ``<mask>``, ``<pad>``, ``<image>``, ``<boi>``, ``<eoi>`` or codes.
    Also a :class:`agents.diffusion.sampler.CachingModelFn` (``encode`` / ``window``) when the
    model has ``encode_with_cache`` / ``forward_window``.
    """

    def __init__(self, model, pixel_values, code_mask, response_mask, ids: SpecialIds) -> None:
        device = code_mask.device
        is_code = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
        is_code[ids.code_start : ids.code_end] = True
        text_banned = is_code.clone()
        text_banned[ids.present("mask", "pad", "image", "boi", "eoi")] = True
        self.model, self.pixel_values, self.ids = model, pixel_values, ids
        self.code_mask, self.text_mask = code_mask, response_mask & ~code_mask
        self.code_banned, self.text_banned = ~is_code, text_banned
        #: whether ``encode``/``window`` work (the model has ``encode_with_cache`` and ``forward_window``)
        self.supports_cache = callable(getattr(model, "encode_with_cache", None)) and callable(
            getattr(model, "forward_window", None)
        )

    def _clean(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        rows = input_ids[:, 0]
        clean = input_ids.clone()
        clean[:, 0] = self.ids.pad
        if attention_mask is not None:
            attention_mask = attention_mask.clone()
            attention_mask[:, 0] = False
        pv = None if self.pixel_values is None else self.pixel_values[rows]
        return rows, clean, attention_mask, pv

    def _constrain(self, logits: torch.Tensor, rows: torch.Tensor, columns: slice) -> torch.Tensor:
        logits = logits.masked_fill(self.code_mask[rows, columns][..., None] & self.code_banned, NEG_LOGIT)
        return logits.masked_fill(self.text_mask[rows, columns][..., None] & self.text_banned, NEG_LOGIT)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        rows, clean, attention_mask, pv = self._clean(input_ids, attention_mask)
        logits = self.model(clean, pixel_values=pv, attention_mask=attention_mask).logits  # (B, L, V)
        return self._constrain(logits, rows, slice(None))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Constrained logits (B, L, V) and the model's KV cache of every position."""
        rows, clean, attention_mask, pv = self._clean(input_ids, attention_mask)
        logits, cache = self.model.encode_with_cache(clean, pixel_values=pv, attention_mask=attention_mask)
        return self._constrain(logits, rows, slice(None)), cache

    def window(self, input_ids, attention_mask, start: int, end: int, cache: torch.Tensor) -> torch.Tensor:
        """Constrained logits (B, end-start, V) of positions ``start:end`` against ``cache``."""
        rows, clean, attention_mask, _ = self._clean(input_ids, attention_mask)
        logits = self.model.forward_window(clean, attention_mask, start, end, cache)
        return self._constrain(logits, rows, slice(start, end))


def tagged_model_fn(
    model: DiffusionModel,
    pixel_values: torch.Tensor | None,
    code_mask: torch.Tensor,
    response_mask: torch.Tensor,
    ids: SpecialIds,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A :class:`TaggedModelFn` over ``model`` (kept as the function-style constructor)."""
    return TaggedModelFn(model, pixel_values, code_mask, response_mask, ids)
