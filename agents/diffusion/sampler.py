"""LLaDA-style masked-diffusion sampling: blocks, low-confidence remasking, forcing, threshold.

Contract (``sample``):
- Input: any ``model_fn(input_ids (B, L), attention_mask (B, L) bool | None) -> logits
  (B, L, V)`` -- a bidirectional denoiser; ``prompt_ids`` (B, P), possibly left-padded with
  ``attention_mask`` (B, P) marking real tokens (the response is always attended).
- The response (G = ``gen_length`` positions) starts fully masked. ``forced_ids`` /
  ``forced_mask`` (B, G) put given tokens at some positions from the start; they are never
  changed and do not count toward any step's quota (inpainting, answer forcing).
- Schedule (default): the response is cut into ``gen_length // block_length`` blocks worked
  on left to right (semi-autoregressive); each block gets ``steps // num_blocks`` steps and
  LLaDA's even schedule of how many of its masked positions to unmask per step. At every step
  the model predicts every masked position of the current block; the token is the argmax of
  ``logits / temperature + Gumbel noise`` (plain argmax at temperature 0; the noise comes from
  ``generator``); the mask token and ``suppress_ids`` are never predicted. The positions with
  the highest confidence -- softmax probability of the chosen token (``low_confidence``) or a
  uniform draw from ``generator`` (``random``) -- are unmasked.
- Threshold decoding (``threshold`` set, Fast-dLLM style): every step unmasks each masked
  position of the row's current block whose confidence exceeds ``threshold``, and at least
  the most confident one, so a block takes between 1 and ``block_length`` steps; ``steps`` is
  then only validated, not used. Rows advance independently; finished rows leave the batch.
- Output: ``SampleOutput`` with the final ``sequences`` (B, P+G), ``unmask_step`` (B, G)
  (0 for forced positions, s >= 1 = the 1-based step that unmasked the position), ``nfe``
  (model calls made; a step in which no row has anything to unmask makes no call, and a call
  only includes the rows that unmask something) and ``steps_taken``.
- State and resume: ``SamplerState`` (masked sequences, unmask record so far, step index).
  ``rebuild_state(final, unmask_step, s, ...)`` rebuilds, from a finished rollout's record,
  exactly the state the sampler itself held after ``s`` steps (positions with
  ``unmask_step <= s`` keep their token, the rest are masked); ``sample(..., state=...)``
  continues from it with the same schedule and makes only the remaining model calls (tree
  search). The continuation is a fresh random draw: it repeats the original rollout's tokens
  only if ``generator`` is in the state it had at step ``s`` of that rollout (or at
  temperature 0 with ``low_confidence`` remasking, which uses no randomness).
- Reproducibility: the same seeded ``generator`` (and batch) gives the same output. Noise is
  drawn on ``generator.device`` (CPU generators work with GPU models) and for the rows of
  each call together, so per-row results at temperature > 0 depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from agents.diffusion.masking import get_num_transfer_tokens

ModelFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
REMASKING = ("low_confidence", "random")


@dataclass
class SamplerState:
    """An intermediate denoising state: masked sequences, unmask record so far, steps done."""

    sequences: torch.Tensor  # (B, P+G) long, mask_id at still-masked response positions
    unmask_step: torch.Tensor  # (B, G) long, 1-based step of unmasking; 0 = forced or still masked
    step: int  # denoising steps already taken

    @property
    def prompt_len(self) -> int:
        """Number of prompt positions P before the response."""
        return self.sequences.shape[1] - self.unmask_step.shape[1]

    def clone(self) -> "SamplerState":
        """A deep copy (tensors cloned)."""
        return SamplerState(self.sequences.clone(), self.unmask_step.clone(), int(self.step))

    def repeat(self, n: int) -> "SamplerState":
        """Each row repeated ``n`` times in place (row i -> rows i*n .. i*n+n-1), for branching."""
        return SamplerState(
            self.sequences.repeat_interleave(n, dim=0), self.unmask_step.repeat_interleave(n, dim=0), self.step
        )

    def equals(self, other: "SamplerState") -> bool:
        """True when both states hold identical tensors and the same step."""
        return (
            self.step == other.step
            and torch.equal(self.sequences, other.sequences)
            and torch.equal(self.unmask_step, other.unmask_step)
        )


@dataclass
class SampleOutput:
    """Result of ``sample``: final tokens, unmask record and the work it took."""

    sequences: torch.Tensor  # (B, P+G) long
    unmask_step: torch.Tensor  # (B, G) long, 0 = forced, s >= 1 = unmasked at step s
    nfe: int  # model calls made by this call of ``sample``
    steps_taken: int  # denoising steps advanced by this call


@dataclass(frozen=True)
class _Plan:
    prompt_len: int
    gen_length: int
    block_length: int
    num_blocks: int
    steps: int
    steps_per_block: int


def _validate(prompt_ids, attention_mask, gen_length, steps, block_length, temperature, remasking, threshold):
    if prompt_ids.dim() != 2 or prompt_ids.dtype != torch.long:
        raise ValueError(f"prompt_ids must be a (B, P) LongTensor, got {tuple(prompt_ids.shape)} {prompt_ids.dtype}")
    if attention_mask is not None and attention_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"attention_mask must match prompt_ids {tuple(prompt_ids.shape)}, got {tuple(attention_mask.shape)}"
        )
    for name, value in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if gen_length % block_length:
        raise ValueError(
            f"gen_length ({gen_length}) must be divisible by block_length ({block_length}); "
            f"use block_length={gen_length} for a single block"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(
            f"steps ({steps}) must be divisible by the number of blocks "
            f"(gen_length / block_length = {num_blocks}); e.g. steps={num_blocks * max(1, steps // num_blocks)}"
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] or None, got {threshold}")
    return _Plan(prompt_ids.shape[1], gen_length, block_length, num_blocks, steps, steps // num_blocks)


def _initial_state(prompt_ids, forced_ids, forced_mask, plan: _Plan, mask_id: int) -> SamplerState:
    batch = prompt_ids.shape[0]
    response = torch.full((batch, plan.gen_length), mask_id, dtype=torch.long, device=prompt_ids.device)
    if (forced_ids is None) != (forced_mask is None):
        raise ValueError("forced_ids and forced_mask must be given together (or neither)")
    if forced_ids is not None:
        shape = (batch, plan.gen_length)
        if tuple(forced_ids.shape) != shape or tuple(forced_mask.shape) != shape:
            raise ValueError(
                f"forced_ids and forced_mask must have shape (B, gen_length) = {shape}, "
                f"got {tuple(forced_ids.shape)} and {tuple(forced_mask.shape)}"
            )
        forced_mask = forced_mask.to(device=prompt_ids.device, dtype=torch.bool)
        forced_ids = forced_ids.to(device=prompt_ids.device, dtype=torch.long)
        if bool((forced_ids[forced_mask] == mask_id).any()):
            raise ValueError(f"forced_ids holds the mask token ({mask_id}) at a forced position")
        response = torch.where(forced_mask, forced_ids, response)
    unmask_step = torch.zeros_like(response)
    return SamplerState(torch.cat([prompt_ids, response], dim=1), unmask_step, 0)


def _check_state(state: SamplerState, prompt_ids, plan: _Plan, threshold) -> SamplerState:
    batch = prompt_ids.shape[0]
    expected = (batch, plan.prompt_len + plan.gen_length)
    if tuple(state.sequences.shape) != expected or tuple(state.unmask_step.shape) != (batch, plan.gen_length):
        raise ValueError(
            f"state does not fit this call: sequences {tuple(state.sequences.shape)} (expected {expected}), "
            f"unmask_step {tuple(state.unmask_step.shape)} (expected {(batch, plan.gen_length)}); "
            "use state.repeat(n) to branch one state into n rows"
        )
    if not torch.equal(state.sequences[:, : plan.prompt_len].to(prompt_ids.device), prompt_ids):
        raise ValueError("state.sequences does not start with prompt_ids; pass the prompt the state came from")
    if state.step < 0 or (threshold is None and state.step > plan.steps):
        raise ValueError(f"state.step must be in [0, steps={plan.steps}], got {state.step}")
    return SamplerState(
        state.sequences.to(prompt_ids.device).clone(), state.unmask_step.to(prompt_ids.device).clone(), state.step
    )


def _scheduled_work(response, unmask_step, plan: _Plan, step: int, mask_id: int):
    """Eligible positions (B, G) and tokens to unmask per row (B,) at ``step`` of the fixed schedule."""
    block, inner = divmod(step, plan.steps_per_block)
    start, end = block * plan.block_length, (block + 1) * plan.block_length
    masked = response == mask_id
    eligible = masked.clone()
    eligible[:, end:] = False  # earlier blocks are complete in any state the sampler produced
    in_block = slice(start, end)
    block_total = masked[:, in_block].sum(1) + (unmask_step[:, in_block] >= 1).sum(1)
    quota = get_num_transfer_tokens(block_total, plan.steps_per_block)[:, inner]
    available = eligible.sum(1)
    last_step_of_block = inner == plan.steps_per_block - 1
    quota = available if last_step_of_block else torch.minimum(quota, available)
    return eligible, quota


def _threshold_work(response, plan: _Plan, mask_id: int):
    """Eligible positions (B, G): masked positions in each row's first block that still has masks."""
    masked = response == mask_id
    positions = torch.arange(plan.gen_length, device=response.device)
    first = torch.where(masked, positions, plan.gen_length).min(dim=1).values  # (B,)
    current_block = first // plan.block_length
    return masked & ((positions // plan.block_length).unsqueeze(0) == current_block.unsqueeze(1))


def _uniform(shape, generator, device, dtype=torch.float32):
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _predict(logits, eligible, *, temperature, remasking, banned, generator):
    """Chosen tokens and confidences (B', G) at eligible positions (confidence -inf elsewhere)."""
    picked = logits[eligible].float()  # (n, V)
    picked[:, banned] = float("-inf")
    if temperature > 0:
        uniform = _uniform(picked.shape, generator, picked.device, torch.float64).clamp_(1e-20, 1.0 - 1e-16)
        gumbel = -torch.log(-torch.log(uniform))
        tokens = (picked.double() / temperature + gumbel).argmax(dim=-1)
    else:
        tokens = picked.argmax(dim=-1)
    if remasking == "low_confidence":
        conf = torch.softmax(picked, dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)
    else:
        conf = _uniform((picked.shape[0],), generator, picked.device)
    chosen = torch.zeros(eligible.shape, dtype=torch.long, device=logits.device)
    chosen[eligible] = tokens
    confidence = torch.full(eligible.shape, float("-inf"), device=logits.device)
    confidence[eligible] = conf
    return chosen, confidence


def _rank(confidence: torch.Tensor) -> torch.Tensor:
    """Rank (B, G) of every position by descending confidence (0 = most confident; ties by index)."""
    order = torch.argsort(confidence, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank


def rebuild_state(
    final_sequences: torch.Tensor, unmask_step: torch.Tensor, step: int, prompt_len: int, mask_id: int
) -> SamplerState:
    """The sampler's exact state after ``step`` steps, rebuilt from a finished rollout's record."""
    if final_sequences.dim() != 2 or unmask_step.dim() != 2:
        raise ValueError("final_sequences (B, P+G) and unmask_step (B, G) must be 2-D")
    gen_length = final_sequences.shape[1] - prompt_len
    if tuple(unmask_step.shape) != (final_sequences.shape[0], gen_length):
        raise ValueError(
            f"unmask_step shape {tuple(unmask_step.shape)} does not fit final_sequences "
            f"{tuple(final_sequences.shape)} with prompt_len={prompt_len} (expected {(final_sequences.shape[0], gen_length)})"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    keep = unmask_step <= step  # forced positions (0) always kept
    response = torch.where(keep, final_sequences[:, prompt_len:], torch.full_like(unmask_step, mask_id))
    sequences = torch.cat([final_sequences[:, :prompt_len], response], dim=1)
    return SamplerState(sequences, torch.where(keep, unmask_step, torch.zeros_like(unmask_step)), int(step))


@torch.no_grad()
def sample(
    model_fn: ModelFn,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    gen_length: int,
    steps: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    threshold: float | None = None,
    mask_id: int,
    forced_ids: torch.Tensor | None = None,
    forced_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    state: SamplerState | None = None,
    suppress_ids: list[int] | None = None,
    on_step: Callable[[SamplerState], None] | None = None,
) -> SampleOutput:
    """Denoise a fully masked response after each prompt (see the module docstring); runs without grad.

    ``on_step`` (optional) receives a copy of the state before the first step and after every step.
    """
    plan = _validate(prompt_ids, attention_mask, gen_length, steps, block_length, temperature, remasking, threshold)
    if state is None:
        current = _initial_state(prompt_ids, forced_ids, forced_mask, plan, mask_id)
    elif forced_ids is not None or forced_mask is not None:
        raise ValueError("pass forced tokens when starting a rollout; a resumed state already holds them")
    else:
        current = _check_state(state, prompt_ids, plan, threshold)
    batch, prompt_len = prompt_ids.shape
    full_mask = None
    if attention_mask is not None:
        ones = torch.ones(batch, gen_length, dtype=torch.bool, device=prompt_ids.device)
        full_mask = torch.cat([attention_mask.to(torch.bool), ones], dim=1)
    banned = sorted({int(mask_id), *(int(i) for i in (suppress_ids or []))})
    x, record, step, start, nfe = current.sequences, current.unmask_step, current.step, current.step, 0
    if on_step is not None:
        on_step(SamplerState(x.clone(), record.clone(), step))
    while True:
        response = x[:, prompt_len:]
        if threshold is None:
            if step >= plan.steps:
                break
            eligible, quota = _scheduled_work(response, record, plan, step, mask_id)
            rows = quota > 0
        else:
            eligible = _threshold_work(response, plan, mask_id)
            rows = eligible.any(dim=1)
            if not bool(rows.any()):
                break
        step += 1
        if bool(rows.any()):
            idx = rows.nonzero(as_tuple=True)[0]
            logits = model_fn(x[idx], None if full_mask is None else full_mask[idx])
            nfe += 1
            if logits.dim() != 3 or tuple(logits.shape[:2]) != (idx.numel(), x.shape[1]):
                raise ValueError(f"model_fn must return (B, L, V) logits for {(idx.numel(), x.shape[1])}, got {tuple(logits.shape)}")
            if max(banned) >= logits.shape[-1] or min(banned) < 0:
                raise ValueError(f"mask_id/suppress_ids {banned} out of range for vocab size {logits.shape[-1]}")
            tokens, confidence = _predict(
                logits[:, prompt_len:], eligible[idx], temperature=temperature, remasking=remasking,
                banned=banned, generator=generator,
            )
            rank = _rank(confidence)
            if threshold is None:
                transfer = rank < quota[idx].unsqueeze(1)
            else:
                transfer = eligible[idx] & ((confidence > threshold) | (rank == 0))
            new_response = response[idx]
            new_response[transfer] = tokens[transfer]
            new_record = record[idx]
            new_record[transfer] = step
            x[idx, prompt_len:] = new_response
            record[idx] = new_record
        if on_step is not None:
            on_step(SamplerState(x.clone(), record.clone(), step))
    return SampleOutput(sequences=x, unmask_step=record, nfe=nfe, steps_taken=step - start)
