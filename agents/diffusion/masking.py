"""Shared mask helpers for the masked-diffusion sampler and the ELBO estimators.

Contract:
- ``row_seeds(mask_seed, batch)``: one 63-bit seed per row, a pure function of
  ``(mask_seed, row)`` (or taken as given from a per-row seed tensor), so a row's masks
  never depend on which other rows share its batch.
- ``bernoulli_in_span(generator, span, prob)``: an i.i.d. Bernoulli(prob) subset of the
  ``True`` positions of ``span`` (one row); it draws exactly ``span.sum()`` uniforms, so the
  mask depends on the number of span positions, not on padding around them.
- ``get_num_transfer_tokens(num_masked, steps)``: LLaDA's even schedule -- how many tokens
  to unmask at each step of a block so that ``steps`` steps unmask all ``num_masked``.
"""

from __future__ import annotations

import hashlib
import operator

import torch

_SEED_BITS = 63


def row_seed(mask_seed: int, row: int) -> int:
    """A stable 63-bit seed for row ``row`` under ``mask_seed`` (same on every machine)."""
    digest = hashlib.blake2b(f"mask:{int(mask_seed)}:{int(row)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << _SEED_BITS) - 1)


def row_seeds(mask_seed: int | torch.Tensor, batch: int) -> list[int]:
    """Per-row seeds: ``row_seed(mask_seed, i)`` for an int, or the values of a (batch,) tensor."""
    if isinstance(mask_seed, torch.Tensor):
        if mask_seed.shape != (batch,):
            raise ValueError(
                f"mask_seed tensor must have shape ({batch},) (one seed per row), got {tuple(mask_seed.shape)}"
            )
        return [int(s) & ((1 << _SEED_BITS) - 1) for s in mask_seed.tolist()]
    try:
        seed = operator.index(mask_seed)  # int, numpy integer, ...
    except TypeError:
        raise TypeError(f"mask_seed must be an int or a (batch,) LongTensor, got {type(mask_seed).__name__}") from None
    return [row_seed(seed, i) for i in range(batch)]


def row_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def bernoulli_in_span(generator: torch.Generator, span: torch.Tensor, prob: float | torch.Tensor) -> torch.Tensor:
    """Bool (L,) mask: each ``True`` position of ``span`` (L,) is chosen with probability ``prob``."""
    positions = span.nonzero(as_tuple=True)[0]
    draws = torch.rand(positions.numel(), generator=generator)
    mask = torch.zeros(span.shape, dtype=torch.bool)
    mask[positions.cpu()] = draws < float(prob)
    return mask.to(span.device)


def get_num_transfer_tokens(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LongTensor (B, steps): ``num_masked`` (B,) split as evenly as possible, remainder first."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    num_masked = num_masked.long().reshape(-1, 1)
    base = num_masked // steps
    remainder = num_masked % steps
    index = torch.arange(steps, device=num_masked.device).unsqueeze(0)
    return base + (index < remainder).long()


def apply_mask(ids: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    """``ids`` with the positions where ``mask`` is True replaced by ``mask_id``."""
    return torch.where(mask, torch.full_like(ids, mask_id), ids)
