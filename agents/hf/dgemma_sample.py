"""The uniform-noise block sampler of :class:`agents.hf.dgemma.DGemmaPolicy` (docs/uniform_diffusion.md, "Sampling").

The response is cut into blocks of the model's ``canvas_length``; each block starts as uniform
random tokens (forced positions fixed) and takes ``steps_per_block`` decoder passes over the
encoder's cache. A step samples every open position (greedy at temperature 0, else from the
temperature-scaled logits), commits the lowest-entropy ones under the entropy bound
(:func:`agents.diffusion.uniform.entropy_bound_commit`, at least an even share of what is left),
re-noises the still-open positions with fresh uniform tokens and feeds its logits back as the
next step's self-conditioning. Committed positions stay (so ``unmask_step`` records the step and
``rollout_from`` can restart from any step: open positions become noise again and the
self-conditioning starts empty). A finished block is appended to the encoder cache
(``cache: prefix | dual``) or the whole prefix is re-encoded at every step (``cache: none``, the
reference; the same tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from agents.collectives import active_sync
from agents.diffusion.rows import NEG_LOGIT
from agents.diffusion.uniform import entropy_bound_commit
from agents.hf.dgemma_model import DGemmaDenoiser

__all__ = ["CanvasState", "sample_blocks"]


@dataclass
class CanvasState:
    """Response tokens (n, R), committed positions (n, R) bool and their step (n, R) long (0 forced, s >= 1 step)."""

    tokens: torch.Tensor
    committed: torch.Tensor
    record: torch.Tensor


def _noise(shape: tuple[int, ...], vocab: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(vocab, shape, generator=generator).to(device)


def _step(logits, canvas, committed, *, temperature, bound, quota, suppress, generator):
    """One denoising step of a block: (new canvas, newly committed (n, C) bool, processed logits)."""
    logits = logits.clone()
    logits[..., suppress] = NEG_LOGIT
    scaled = logits / temperature if temperature > 0 else logits
    probs = torch.softmax(scaled, -1)
    if temperature > 0:
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
        choice = flat.reshape(canvas.shape).to(canvas.device)
    else:
        choice = scaled.argmax(-1)
    entropy = -(probs * torch.log_softmax(scaled, -1)).sum(-1)
    pick = entropy_bound_commit(entropy, ~committed, bound, quota)
    return torch.where(pick, choice, canvas), pick, scaled


@torch.no_grad()
def _finished(done: torch.Tensor, sync: Any) -> bool:
    """Whether the block's steps end here: every position committed (on every rank, in a synced training step)."""
    mine = bool(done.all())
    if sync is None:
        return mine
    return not sync.pad(0, not mine)[1]


def sample_blocks(
    model: DGemmaDenoiser,
    prompt_ids: torch.Tensor,
    attention: torch.Tensor,
    pixel_values: torch.Tensor | None,
    state: CanvasState,
    *,
    steps: int,
    temperature: float,
    entropy_bound: float,
    cache: str,
    suppress: list[int],
    generator: torch.Generator | None = None,
    start_step: int = 0,
) -> tuple[CanvasState, int]:
    """Fill every open position of ``state`` (module docstring); returns the final state and the decoder passes made."""
    n, length = state.tokens.shape
    width, vocab = model.config.canvas_length, model.config.vocab_size
    blocks = [(s, min(s + width, length)) for s in range(0, length, width)]
    per_block = max(1, math.ceil(min(length, steps) / len(blocks)))
    tokens, committed, record = state.tokens.clone(), state.committed.clone(), state.record.clone()
    ids, att = prompt_ids, attention.bool()
    kv = model.encode(ids, att, pixel_values) if cache != "none" else None
    nfe, sync = 0, active_sync()
    for b, (lo, hi) in enumerate(blocks):
        done = committed[:, lo:hi]
        canvas = torch.where(done, tokens[:, lo:hi], _noise((n, hi - lo), vocab, generator, tokens.device))
        sc = None
        for k in range(1, per_block + 1):
            step = b * per_block + k
            if step <= start_step:
                continue
            if _finished(done, sync):
                break
            context = kv if kv is not None else model.encode(ids, att, pixel_values)
            logits = model.decode(canvas, context, att, sc_logits=sc)
            if bool(done.all()):  # a dummy pass while another rank still decodes (agents.collectives)
                continue
            nfe += 1
            left = (~done).sum(-1)
            quota = left if k == per_block else -(-left // (per_block - k + 1))
            canvas, pick, sc = _step(logits, canvas, done, temperature=temperature, bound=entropy_bound, quota=quota,
                                     suppress=suppress, generator=generator)  # fmt: skip
            done = done | pick
            record[:, lo:hi] = torch.where(pick, torch.full_like(pick, step, dtype=torch.long), record[:, lo:hi])
            canvas = torch.where(done, canvas, _noise((n, hi - lo), vocab, generator, tokens.device))
        if not bool(done.all()):
            raise RuntimeError(f"block {b} left {int((~done).sum())} positions open after {per_block} steps")
        tokens[:, lo:hi], committed[:, lo:hi] = canvas, done
        ids, att = torch.cat([ids, canvas], 1), torch.cat([att, torch.ones_like(done)], 1)
        if kv is not None and hi < length:
            kv = model.extend(kv, canvas, att)
    return CanvasState(tokens, committed, record), nfe
