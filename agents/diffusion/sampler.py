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
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable
import warnings

import torch

from agents.collectives import active_sync
from agents.diffusion.masking import get_num_transfer_tokens

ModelFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
REMASKING = ("low_confidence", "random")
#: KV-cache modes (see :class:`CachingModelFn`); ``none`` is the exact reference.
CACHE_MODES = ("none", "prefix", "dual")


@runtime_checkable
class CachingModelFn(Protocol):
    """A model function that can also run on a window of positions against cached keys/values.

    ``encode(input_ids (B, L), attention_mask) -> (logits (B, L, V), cache)``: a full forward;
    ``cache`` is one tensor with the batch first (row ``i`` of the cache belongs to row ``i`` of
    the input), holding every layer's keys and values of every position.
    ``window(input_ids (B, L), attention_mask, start, end, cache) -> logits (B, end-start, V)``:
    the logits of positions ``start:end`` computed from their current tokens, attending to the
    cached keys/values of every other position (``start`` is never inside the prompt).
    """

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor: ...

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, start: int, end: int, cache: torch.Tensor
    ) -> torch.Tensor: ...


_WARNED: set[str] = set()


def resolve_cache(model_fn: ModelFn, cache: str) -> str:
    """``cache``, or ``"none"`` (warning once per model type) when ``model_fn`` cannot take a KV cache."""
    check_cache(cache)
    if cache == "none" or (isinstance(model_fn, CachingModelFn) and getattr(model_fn, "supports_cache", True)):
        return cache
    name = type(model_fn).__name__
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(
            f"cache={cache!r} needs a model function with encode()/window() (agents.diffusion.sampler.CachingModelFn); "
            f"{name} has none, so this model decodes without a KV cache (cache='none')",
            stacklevel=3,
        )
    return "none"


class _KVStore:
    """Per-row KV caches of a sampler call and the block each was built for (-1: none yet)."""

    def __init__(self, batch: int, device: torch.device) -> None:
        self.cache: torch.Tensor | None = None
        self.block = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.batch = batch

    def logits(self, model_fn: CachingModelFn, x, mask, idx, blocks, plan: _Plan, mode: str) -> tuple[torch.Tensor, int]:
        """Response logits (n, G, V) of rows ``idx`` (valid inside each row's current block ``blocks``) and the calls made."""
        p, out, calls = plan.prompt_len, None, 0
        stale = self.block[idx] != blocks
        if bool(stale.any()):  # block boundary: one full forward refreshes the row's cache
            rows = idx[stale]
            logits, cache = model_fn.encode(x[rows], None if mask is None else mask[rows])
            if self.cache is None:
                self.cache = torch.zeros((self.batch, *cache.shape[1:]), dtype=cache.dtype, device=cache.device)
            self.cache[rows] = cache
            self.block[rows] = blocks[stale]
            calls += 1
            out = torch.zeros((len(idx), plan.gen_length, logits.shape[-1]), dtype=logits.dtype, device=logits.device)
            out[stale] = logits[:, p:]
        for block in blocks[~stale].unique().tolist():
            pick = (~stale) & (blocks == block)
            rows = idx[pick]
            start = p + plan.block_starts[block]
            end = start + plan.block_sizes[block] if mode == "dual" else p + plan.gen_length
            logits = model_fn.window(x[rows], None if mask is None else mask[rows], start, end, self.cache[rows])
            calls += 1
            if out is None:
                out = torch.zeros((len(idx), plan.gen_length, logits.shape[-1]), dtype=logits.dtype, device=logits.device)
            out[pick, start - p : end - p] = logits
        return out, calls


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
    block_sizes: tuple[int, ...]  # response positions per block, left to right
    block_steps: tuple[int, ...]  # denoising steps per block (fixed schedule)

    @property
    def num_blocks(self) -> int:
        return len(self.block_sizes)

    @property
    def steps(self) -> int:
        return sum(self.block_steps)

    @property
    def block_starts(self) -> tuple[int, ...]:
        """Response offset of each block's first position."""
        out, start = [], 0
        for size in self.block_sizes:
            out.append(start)
            start += size
        return tuple(out)

    def block_of_step(self, step: int) -> tuple[int, int]:
        """``(block, inner)``: the block a 0-based fixed-schedule ``step`` works on and its index within it."""
        for block, count in enumerate(self.block_steps):
            if step < count:
                return block, step
            step -= count
        raise ValueError("step past the schedule")

    def block_of_position(self, positions: torch.Tensor) -> torch.Tensor:
        """Block index of response offsets ``positions`` (any shape)."""
        bounds = torch.tensor(self.block_starts[1:], device=positions.device)
        return torch.bucketize(positions, bounds, right=True)


def split_steps(steps: int, block_sizes: Sequence[int]) -> tuple[int, ...]:
    """``steps`` shared among blocks in proportion to their sizes (largest remainder; each 1..size)."""
    total = sum(block_sizes)
    if not 1 <= len(block_sizes) <= steps <= total:
        raise ValueError(
            f"steps ({steps}) must be between the number of blocks ({len(block_sizes)}) and the response length ({total})"
        )
    exact = [steps * size / total for size in block_sizes]
    out = [max(1, min(size, int(x))) for x, size in zip(exact, block_sizes)]
    order = sorted(range(len(out)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    while sum(out) != steps:
        grow = sum(out) < steps
        for i in order if grow else reversed(order):
            if (grow and out[i] < block_sizes[i]) or (not grow and out[i] > 1):
                out[i] += 1 if grow else -1
                break
    return tuple(out)


def _validate(prompt_ids, attention_mask, gen_length, steps, block_length, temperature, remasking, threshold):
    if prompt_ids.dim() != 2 or prompt_ids.dtype != torch.long:
        raise ValueError(f"prompt_ids must be a (B, P) LongTensor, got {tuple(prompt_ids.shape)} {prompt_ids.dtype}")
    if attention_mask is not None and attention_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"attention_mask must match prompt_ids {tuple(prompt_ids.shape)}, got {tuple(attention_mask.shape)}"
        )
    for name, value in (("gen_length", gen_length), ("steps", steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    check_threshold(threshold)
    if not isinstance(block_length, int):  # explicit block sizes
        sizes = tuple(int(b) for b in block_length)
        if not sizes or min(sizes) < 1 or sum(sizes) != gen_length:
            raise ValueError(f"block sizes {list(block_length)} must be positive and sum to gen_length ({gen_length})")
        return _Plan(prompt_ids.shape[1], gen_length, sizes, split_steps(steps, sizes))
    if block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    if gen_length % block_length:
        raise ValueError(
            f"gen_length ({gen_length}) must be divisible by block_length ({block_length}); "
            f"use block_length={gen_length} for a single block, or a list of block sizes"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(
            f"steps ({steps}) must be divisible by the number of blocks "
            f"(gen_length / block_length = {num_blocks}); e.g. steps={num_blocks * max(1, steps // num_blocks)}"
        )
    return _Plan(prompt_ids.shape[1], gen_length, (block_length,) * num_blocks, (steps // num_blocks,) * num_blocks)


def check_threshold(threshold: float | None, owner: str = "threshold") -> float | None:
    """``threshold`` if it is None or in (0, 1]; else ``ValueError`` naming ``owner`` (the one threshold rule)."""
    if threshold is not None and not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"{owner} must be in (0, 1] or None, got {threshold}")
    return threshold


def check_cache(cache: str, owner: str = "cache") -> str:
    """``cache`` if it is one of :data:`CACHE_MODES`; else ``ValueError`` naming ``owner``."""
    if cache not in CACHE_MODES:
        raise ValueError(f"{owner} must be one of {CACHE_MODES}, got {cache!r}")
    return cache


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
    """Eligible positions (B, G), tokens to unmask per row (B,) and the block at ``step`` of the fixed schedule."""
    block, inner = plan.block_of_step(step)
    start = plan.block_starts[block]
    end, block_steps = start + plan.block_sizes[block], plan.block_steps[block]
    masked = response == mask_id
    eligible = masked.clone()
    eligible[:, end:] = False  # earlier blocks are complete in any state the sampler produced
    in_block = slice(start, end)
    block_total = masked[:, in_block].sum(1) + (unmask_step[:, in_block] >= 1).sum(1)
    quota = get_num_transfer_tokens(block_total, block_steps)[:, inner]
    available = eligible.sum(1)
    last_step_of_block = inner == block_steps - 1
    quota = available if last_step_of_block else torch.minimum(quota, available)
    return eligible, quota, torch.full_like(quota, block)


def _threshold_work(response, plan: _Plan, mask_id: int):
    """Eligible positions (B, G) -- masked positions in each row's first block that still has masks -- and that block (B,)."""
    masked = response == mask_id
    positions = torch.arange(plan.gen_length, device=response.device)
    first = torch.where(masked, positions, plan.gen_length - 1).min(dim=1).values  # (B,)
    current_block = plan.block_of_position(first)
    of_position = plan.block_of_position(positions)
    return masked & (of_position.unsqueeze(0) == current_block.unsqueeze(1)), current_block


class _Work(NamedTuple):
    """One step's work: eligible positions (B, G), rows that unmask something (B,), each row's block (B,), quota (B,)."""

    eligible: torch.Tensor
    rows: torch.Tensor
    blocks: torch.Tensor
    quota: torch.Tensor | None  # tokens to unmask per row (fixed schedule only)


class _Schedule:
    """The fixed schedule: ``plan.steps`` steps, each unmasking its quota of the step's block."""

    def __init__(self, plan: _Plan, mask_id: int) -> None:
        self.plan, self.mask_id = plan, mask_id

    def work(self, response: torch.Tensor, record: torch.Tensor, step: int) -> _Work | None:
        """The work of 0-based ``step``; None once the schedule is done."""
        if step >= self.plan.steps:
            return None
        eligible, quota, blocks = _scheduled_work(response, record, self.plan, step, self.mask_id)
        return _Work(eligible, quota > 0, blocks, quota)

    def transfer(self, work: _Work, idx: torch.Tensor, eligible: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Positions (n, G) of rows ``idx`` to unmask: each row's ``quota`` most confident ones."""
        return _rank(confidence) < work.quota[idx].unsqueeze(1)


class _Threshold:
    """Threshold decoding: every masked position of the row's current block above ``threshold``, at least one."""

    def __init__(self, plan: _Plan, mask_id: int, threshold: float) -> None:
        self.plan, self.mask_id, self.threshold = plan, mask_id, threshold

    def work(self, response: torch.Tensor, record: torch.Tensor, step: int) -> _Work | None:
        """The rows whose current block still has masks; None once no row has any."""
        eligible, blocks = _threshold_work(response, self.plan, self.mask_id)
        rows = eligible.any(dim=1)
        if not bool(rows.any()):
            return None
        return _Work(eligible, rows, blocks, None)

    def transfer(self, work: _Work, idx: torch.Tensor, eligible: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Positions (n, G) of rows ``idx`` to unmask: confidence over the threshold, or the row's most confident."""
        return eligible & ((confidence > self.threshold) | (_rank(confidence) == 0))


class _FullForward:
    """No cache (``none``): one full forward of the chosen rows per step; the store interface of :class:`_KVStore`."""

    def logits(self, model_fn: ModelFn, x, mask, idx, blocks, plan: _Plan, mode: str) -> tuple[torch.Tensor, int]:
        """Response logits (n, G, V) of rows ``idx`` and the one call made."""
        logits = model_fn(x[idx], None if mask is None else mask[idx])
        if logits.dim() != 3 or tuple(logits.shape[:2]) != (idx.numel(), x.shape[1]):
            raise ValueError(f"model_fn must return (B, L, V) logits for {(idx.numel(), x.shape[1])}, got {tuple(logits.shape)}")
        return logits[:, plan.prompt_len :], 1


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


def _start(prompt_ids, forced_ids, forced_mask, state: SamplerState | None, plan: _Plan, mask_id: int, threshold) -> SamplerState:
    """The state a call starts from: fresh (with any forced tokens) or a checked copy of ``state``."""
    if state is None:
        return _initial_state(prompt_ids, forced_ids, forced_mask, plan, mask_id)
    if forced_ids is not None or forced_mask is not None:
        raise ValueError("pass forced tokens when starting a rollout; a resumed state already holds them")
    return _check_state(state, prompt_ids, plan, threshold)


def _step(model_fn, store, strategy, work: _Work, x, record, full_mask, step: int, plan: _Plan, mode: str, decode: dict) -> int:
    """Unmask this step's positions of the rows in ``work`` in place (``x``, ``record``); returns the model calls made."""
    prompt_len, banned = plan.prompt_len, decode["banned"]
    response = x[:, prompt_len:]
    idx = work.rows.nonzero(as_tuple=True)[0]
    logits, calls = store.logits(model_fn, x, full_mask, idx, work.blocks[idx], plan, mode)
    if max(banned) >= logits.shape[-1] or min(banned) < 0:
        raise ValueError(f"mask_id/suppress_ids {banned} out of range for vocab size {logits.shape[-1]}")
    eligible = work.eligible[idx]
    tokens, confidence = _predict(logits, eligible, **decode)
    transfer = strategy.transfer(work, idx, eligible, confidence)
    new_response = response[idx]
    new_response[transfer] = tokens[transfer]
    new_record = record[idx]
    new_record[transfer] = step
    x[idx, prompt_len:] = new_response
    record[idx] = new_record
    return calls


@torch.no_grad()
def sample(
    model_fn: ModelFn,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    gen_length: int,
    steps: int,
    block_length: int | Sequence[int],
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
    cache: str = "none",
) -> SampleOutput:
    """Denoise a fully masked response after each prompt (see the module docstring); runs without grad.

    ``on_step`` (optional) receives a copy of the state before the first step and after every step.
    ``cache`` (``none`` | ``prefix`` | ``dual``) needs a :class:`CachingModelFn`; other model
    functions fall back to ``none`` with one warning.
    """
    plan = _validate(prompt_ids, attention_mask, gen_length, steps, block_length, temperature, remasking, threshold)
    mode = resolve_cache(model_fn, cache)
    current = _start(prompt_ids, forced_ids, forced_mask, state, plan, mask_id, threshold)
    batch, prompt_len = prompt_ids.shape
    full_mask = None
    if attention_mask is not None:
        ones = torch.ones(batch, gen_length, dtype=torch.bool, device=prompt_ids.device)
        full_mask = torch.cat([attention_mask.to(torch.bool), ones], dim=1)
    banned = sorted({int(mask_id), *(int(i) for i in (suppress_ids or []))})
    decode = dict(temperature=temperature, remasking=remasking, banned=banned, generator=generator)
    strategy = _Schedule(plan, mask_id) if threshold is None else _Threshold(plan, mask_id, threshold)
    store = _KVStore(batch, prompt_ids.device) if mode != "none" else _FullForward()
    x, record, step, start, nfe = current.sequences, current.unmask_step, current.step, current.step, 0
    if on_step is not None:
        on_step(SamplerState(x.clone(), record.clone(), step))
    sync = active_sync()  # a multi-process training step: every rank makes the same model calls (agents.collectives)
    while True:
        work, calls = strategy.work(x[:, prompt_len:], record, step), 0
        if work is not None:
            step += 1
            if bool(work.rows.any()):
                calls = _step(model_fn, store, strategy, work, x, record, full_mask, step, plan, mode, decode)
                nfe += calls
            if on_step is not None:
                on_step(SamplerState(x.clone(), record.clone(), step))
        if sync is not None:  # pad with dummy forwards (results dropped) while another rank still decodes
            missing, working = sync.pad(calls, work is not None)
            for _ in range(missing):
                model_fn(x[:1], None if full_mask is None else full_mask[:1])
            if not working:
                break
        elif work is None:
            break
    return SampleOutput(sequences=x, unmask_step=record, nfe=nfe, steps_taken=step - start)
