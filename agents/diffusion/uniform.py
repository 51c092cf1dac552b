"""Uniform-state diffusion (DiffusionGemma): canvas corruption, likelihood passes, entropy-bound commits.

The derivation and the published recipe this follows are in docs/uniform_diffusion.md.

* Corruption (the forward process): at level ``t`` every scored canvas position is replaced, with
  probability ``t``, by a token drawn uniformly from the whole vocabulary (there is no mask token).
* :func:`uniform_passes` -- the corrupted inputs of one likelihood estimate. Every pass scores
  **every** response position (corrupted or not: under uniform noise the model cannot tell which
  positions are clean), with weight ``1 / passes``; estimators, generalising
  :mod:`agents.diffusion.likelihood`:

  * ``random_mask`` -- ``t ~ U(T_MIN, 1)`` (the recipe's draw, eps 1e-3), one pass per sample:
    the published SFT loss, term for term;
  * ``complementary`` -- ``t ~ U(0, 1)``, a corruption set ``A`` and a second pass corrupting
    exactly the other positions (rate ``1 - t``, also uniform): an antithetic pair, each pass an
    unbiased draw of the same objective, every position clean in exactly one of the two;
  * ``mean_field`` -- ``t = 1`` (every position noise): the prompt-only prediction, like d1's
    fully masked pass (deterministic for a fixed seed; the noise tokens are drawn, not masked).

  Each pass also draws, per row, whether the decoder is self-conditioned (probability
  ``self_conditioning_p``, the recipe's 0.5). Draws come from one CPU generator per row
  (:func:`agents.diffusion.masking.row_seeds`) over the row's own response positions only, so a
  row's passes depend on neither the other rows nor padding.
* :func:`entropy_bound_commit` -- which not-yet-committed canvas positions a sampling step keeps:
  the lowest-entropy ones whose entropy sum minus their largest entropy stays within the bound
  (the EB-sampler rule, arXiv 2505.24857, as transformers' ``EntropyBoundSampler``), and at least
  ``quota`` of them so the block finishes in its step budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.diffusion.likelihood import ESTIMATORS, T_MIN
from agents.diffusion.masking import bernoulli_in_span, row_generator, row_seeds

__all__ = ["UniformPass", "corrupt_rows", "entropy_bound_commit", "uniform_passes"]


@dataclass
class UniformPass:
    """One corrupted copy of the batch: its tokens, where they were replaced, the row weights and self-conditioning bits."""

    tokens: torch.Tensor  # (B, L) long: the sequences with corrupted positions replaced by uniform tokens
    corrupted: torch.Tensor  # (B, L) bool
    weight: torch.Tensor  # (B,) float: weight of this pass's log-probs (1 / passes)
    self_condition: torch.Tensor  # (B,) bool: whether the decoder is self-conditioned in this pass


def corrupt_rows(sequences: torch.Tensor, corrupted: torch.Tensor, vocab_size: int, gens: list[torch.Generator]) -> torch.Tensor:
    """``sequences`` (B, L) with each row's ``corrupted`` positions replaced by uniform tokens from its own generator."""
    out = sequences.clone()
    for row, gen in enumerate(gens):
        where = corrupted[row].nonzero(as_tuple=True)[0]
        out[row, where] = torch.randint(vocab_size, (where.numel(),), generator=gen)
    return out


def uniform_passes(
    sequences: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    estimator: str,
    mask_seed: int | torch.Tensor,
    vocab_size: int,
    num_samples: int = 1,
    self_conditioning_p: float = 0.5,
) -> list[UniformPass]:
    """The corrupted passes of one estimate (module docstring); CPU tensors of the shape of ``sequences``."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not 0.0 <= self_conditioning_p <= 1.0:
        raise ValueError(f"self_conditioning_p must be in [0, 1], got {self_conditioning_p}")
    sequences, response = sequences.cpu(), response_mask.to(torch.bool).cpu()
    gens = [row_generator(s) for s in row_seeds(mask_seed, sequences.shape[0])]
    sets: list[torch.Tensor] = []
    for _ in range(num_samples):
        if estimator == "mean_field":
            sets.append(response.clone())
            continue
        low = T_MIN if estimator == "random_mask" else 0.0
        t = [low + (1.0 - low) * float(torch.rand(1, generator=g)[0]) for g in gens]
        first = torch.stack([bernoulli_in_span(g, r, p) for g, r, p in zip(gens, response, t)])
        sets += [first, response & ~first] if estimator == "complementary" else [first]
    weight = torch.full((sequences.shape[0],), 1.0 / len(sets))
    passes = []
    for corrupted in sets:
        tokens = corrupt_rows(sequences, corrupted, vocab_size, gens)
        bits = torch.stack([torch.rand(1, generator=g)[0] < self_conditioning_p for g in gens])
        passes.append(UniformPass(tokens, corrupted, weight, bits))
    return passes


def entropy_bound_commit(entropy: torch.Tensor, candidates: torch.Tensor, bound: float, quota: torch.Tensor) -> torch.Tensor:
    """Bool (n, C): per row, the candidate positions to commit (lowest entropy first, module docstring).

    ``entropy`` (n, C) float, ``candidates`` (n, C) bool (not yet committed), ``quota`` (n,) long:
    at least this many are committed (all candidates when fewer remain).
    """
    big = torch.finfo(entropy.dtype).max
    keyed = torch.where(candidates, entropy, torch.full_like(entropy, big))
    order = keyed.argsort(dim=-1, stable=True)
    sorted_entropy = keyed.gather(-1, order)
    valid = candidates.gather(-1, order)
    safe = torch.where(valid, sorted_entropy, torch.zeros_like(sorted_entropy))
    within = (safe.cumsum(-1) - safe <= bound) & valid
    rank = torch.arange(entropy.shape[-1], device=entropy.device).expand_as(within)
    chosen = (within | (rank < quota[:, None])) & valid
    return torch.zeros_like(candidates).scatter(-1, order, chosen)
