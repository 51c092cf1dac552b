"""The uniform-state likelihood surrogate of :class:`agents.hf.dgemma.DGemmaPolicy` (docs/uniform_diffusion.md).

:func:`uniform_estimate` runs one encoder pass over the clean rows (the cache every decoder pass
reads, and the encoder's next-token logits for the AR co-loss), then, per corrupted pass of
:func:`agents.diffusion.uniform.uniform_passes` and per canvas block, a decoder pass over the
corrupted block attending to the columns before it; rows drawn for self-conditioning first get a
no-grad pass whose logits condition the scored one (the recipe's two-pass scheme). Rows are
processed in groups of equal response length (blocks line up inside a group).
"""

from __future__ import annotations

import torch

from agents.diffusion.likelihood import LikelihoodEstimate
from agents.diffusion.uniform import UniformPass
from agents.hf.dgemma_model import DGemmaDenoiser
from agents.policy import Rollouts

__all__ = ["ar_mean_logp", "uniform_estimate"]


def ar_mean_logp(ar_logits: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor, image_id: int) -> torch.Tensor:
    """(n,) the mean next-token log-prob of each row over its attended pairs whose target is not an image placeholder."""
    pairs = attention[:, :-1] & attention[:, 1:] & (ids[:, 1:] != image_id)
    logp = torch.log_softmax(ar_logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * pairs).sum(-1) / pairs.sum(-1).clamp(min=1)


def _decode_pass(model: DGemmaDenoiser, cache, one: UniformPass, rows, ids, attention, lo: int, hi: int) -> torch.Tensor:
    """Log-probs (n, hi - lo) of the clean tokens at columns ``lo:hi`` from the pass's corrupted block."""
    device = ids.device
    canvas = one.tokens[rows][:, lo:hi].to(device)
    sc_mask = one.self_condition[rows].to(device)
    sc = None
    if bool(sc_mask.any()):
        with torch.no_grad():
            sc = model.decode(canvas, cache, attention, block_col=lo).detach()
    logits = model.decode(canvas, cache, attention, block_col=lo, sc_logits=sc, sc_mask=sc_mask if sc is not None else None)
    return torch.log_softmax(logits, -1).gather(-1, ids[:, lo:hi, None]).squeeze(-1)


def uniform_estimate(model: DGemmaDenoiser, rollouts: Rollouts, scored: torch.Tensor, passes: list[UniformPass],
                     ar_rows: torch.Tensor, ar_weight: float) -> LikelihoodEstimate:  # fmt: skip
    """``loglik`` (B,) = sum over scored positions of the passes' weighted log-probs (+ the AR term of ``ar_rows``)."""
    device = next(model.parameters()).device
    sequences, attention = rollouts.sequences.to(device), rollouts.attention_mask.to(device).bool()
    scored = scored.to(device)
    pixels = None if rollouts.pixel_values is None else rollouts.pixel_values.to(device)
    token_logp = torch.zeros(sequences.shape, device=device)
    lengths = scored.sum(-1)
    width = model.config.canvas_length
    for length in sorted(set(lengths.tolist())):
        rows = (lengths == length).nonzero(as_tuple=True)[0]
        ids, att = sequences[rows], attention[rows]
        if bool((~scored[rows, ids.shape[1] - length :]).any()):
            raise ValueError("scored positions must be the last columns of each row (the response)")
        want_ar = bool(ar_rows[rows.cpu()].any())
        cache, ar_logits = model.encode_full(ids, att, None if pixels is None else pixels[rows], want_ar)
        part = torch.zeros(ids.shape, device=device)
        start = ids.shape[1] - length
        for one in passes:
            for lo in range(start, ids.shape[1], width):
                hi = min(lo + width, ids.shape[1])
                weight = one.weight[rows.cpu()].to(device)[:, None]
                logp = _decode_pass(model, cache, one, rows.cpu(), ids, att, lo, hi)
                part = part + torch.nn.functional.pad(weight * logp, (lo, ids.shape[1] - hi))
        if want_ar:
            mean = ar_mean_logp(ar_logits, ids, att, model.config.image_token_id)
            mask = ar_rows[rows.cpu()].to(device)
            part = part + (ar_weight * mean * mask)[:, None] * scored[rows].float()
        token_logp = token_logp.index_put((rows,), part)
    counts = len(passes) * scored.long()
    return LikelihoodEstimate(loglik=token_logp.sum(-1), token_logp=token_logp, scored_count=counts.cpu(), num_forward=len(passes))
