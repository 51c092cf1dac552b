"""ELBO-style log-likelihood estimators for a masked-diffusion model (no exact likelihood exists).

Contract (``estimate_log_likelihood``):
- Input: ``model_fn(input_ids (B, L), attention_mask (B, L) | None) -> logits (B, L, V)``,
  ``sequences`` (B, L) = prompt + response (+ padding), ``response_mask`` (B, L) marking the
  positions to score. The prompt is never masked, except by ``mean_field``'s optional
  ``prompt_mask_prob`` (never at ``prompt_mask_exclude`` positions, e.g. image placeholders).
- Estimators (``m`` = masked response positions of one pass, log p from the masked input):
  * ``mean_field`` (d1): one pass per sample with the whole response masked;
    ``loglik = sum_i log p(x_i | prompt)``. Deterministic unless the prompt is masked; biased
    (it ignores the response context) but zero mask variance.
  * ``random_mask`` (LLaDA / UniGRPO): ``t ~ U(t_min, 1)``, each response token masked with
    probability ``t``; ``loglik = (1/t) sum_{i in m} log p(x_i | x_unmasked)``; unbiased
    for the LLaDA ELBO; ``num_samples`` passes averaged.
  * ``complementary`` (LaViDa-R1): ``t ~ U(0, 1)``, mask ``m``, then a second pass masking
    exactly the other response tokens; weight 1, so each response token is scored exactly
    once per pair; ``num_samples`` pairs (2 * num_samples passes) averaged. ``complementary_t``
    fixes ``t`` instead (an ablation: t = 0.5 removes the variance that the draw of ``t``
    adds, at the price of estimating a different, half-context quantity).
- Masks come from one CPU ``torch.Generator`` per row seeded by ``row_seed(mask_seed, row)``
  (or by ``mask_seed[row]`` when a (B,) tensor is given), drawing only over the row's own
  response positions, so a row's masks depend on neither the other rows nor padding, and
  old and current policies given the same ``mask_seed`` see the same masks.
- Output ``LikelihoodEstimate``: ``loglik`` (B,) with gradients -- the SUM over response
  tokens (``normalize=True`` divides by the number of response tokens); ``token_logp``
  (B, L) the per-position contributions (weights and the 1/num_samples average included) so
  that ``loglik == token_logp.sum(-1)`` before normalizing, 0 where never scored;
  ``scored_count`` (B, L) how often each position was scored; ``num_forward`` model passes.
  The trainer's ``nll/text`` and ``nll/image`` come from ``token_logp``
  (:class:`agents.train_batch.NLLMeter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from agents.diffusion.masking import apply_mask, bernoulli_in_span, row_generator, row_seeds

ModelFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
ESTIMATORS = ("mean_field", "random_mask", "complementary")
T_MIN = 1e-3  # random_mask draws t from U(T_MIN, 1): bounds the 1/t weight, keeps it unbiased


@dataclass
class LikelihoodEstimate:
    """Per-sequence log-likelihood estimate and its per-position breakdown."""

    loglik: torch.Tensor  # (B,) float, differentiable
    token_logp: torch.Tensor  # (B, L) float, contributions summing to the unnormalized loglik
    scored_count: torch.Tensor  # (B, L) long, times each position was scored
    num_forward: int  # model passes made


@dataclass
class _Pass:
    noisy: torch.Tensor  # (B, L) bool, positions replaced by the mask token
    scored: torch.Tensor  # (B, L) bool, positions whose log-prob counts
    weight: torch.Tensor  # (B,) float, weight of this pass's log-probs per row


def _validate(sequences, response_mask, attention_mask, prompt_mask_exclude, estimator, num_samples,
              prompt_mask_prob, mask_id):
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if sequences.dim() != 2 or sequences.dtype != torch.long:
        raise ValueError(f"sequences must be a (B, L) LongTensor, got {tuple(sequences.shape)} {sequences.dtype}")
    named = (("response_mask", response_mask), ("attention_mask", attention_mask),
             ("prompt_mask_exclude", prompt_mask_exclude))
    for name, mask in named:
        if mask is not None and mask.shape != sequences.shape:
            raise ValueError(f"{name} must have the shape of sequences {tuple(sequences.shape)}, got {tuple(mask.shape)}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not 0.0 <= prompt_mask_prob < 1.0:
        raise ValueError(f"prompt_mask_prob must be in [0, 1), got {prompt_mask_prob}")
    if prompt_mask_prob > 0 and estimator != "mean_field":
        raise ValueError(f"prompt_mask_prob is a mean_field option; {estimator} never masks the prompt")
    response_mask = response_mask.to(torch.bool)
    if attention_mask is not None and bool((response_mask & ~attention_mask.to(torch.bool)).any()):
        raise ValueError("response_mask marks positions that attention_mask excludes (padding)")
    if bool((sequences[response_mask] == mask_id).any()):
        raise ValueError(f"a response position holds the mask token ({mask_id}); score finished sequences only")


def _mean_field_passes(gens, response, candidates, prob, num_samples) -> list[_Pass]:
    passes = []
    for _ in range(num_samples):
        prompt_masked = torch.stack([bernoulli_in_span(g, c, prob) for g, c in zip(gens, candidates)])
        passes.append(_Pass(response | prompt_masked, response, torch.ones(len(gens))))
    return passes


def _random_mask_passes(gens, response, num_samples) -> list[_Pass]:
    passes = []
    for _ in range(num_samples):
        t = torch.stack([T_MIN + (1.0 - T_MIN) * torch.rand(1, generator=g)[0] for g in gens])  # (B,)
        masked = torch.stack([bernoulli_in_span(g, r, p) for g, r, p in zip(gens, response, t)])
        passes.append(_Pass(masked, masked, 1.0 / t))
    return passes


def _complementary_passes(gens, response, num_samples, fixed_t) -> list[_Pass]:
    passes = []
    ones = torch.ones(len(gens))
    for _ in range(num_samples):
        t = [torch.rand(1, generator=g)[0] if fixed_t is None else fixed_t for g in gens]
        first = torch.stack([bernoulli_in_span(g, r, p) for g, r, p in zip(gens, response, t)])
        second = response & ~first
        passes += [_Pass(first, first, ones), _Pass(second, second, ones)]
    return passes


def _masks(estimator, sequences, response, attention_mask, prompt_mask_exclude, mask_seed, num_samples,
           prompt_mask_prob, complementary_t) -> list[_Pass]:
    gens = [row_generator(s) for s in row_seeds(mask_seed, sequences.shape[0])]
    response = response.cpu()
    if estimator == "random_mask":
        return _random_mask_passes(gens, response, num_samples)
    if estimator == "complementary":
        return _complementary_passes(gens, response, num_samples, complementary_t)
    candidates = ~response
    if attention_mask is not None:
        candidates &= attention_mask.to(torch.bool).cpu()
    if prompt_mask_exclude is not None:
        candidates &= ~prompt_mask_exclude.to(torch.bool).cpu()
    return _mean_field_passes(gens, response, candidates, prompt_mask_prob, num_samples)


def estimate_log_likelihood(
    model_fn: ModelFn,
    sequences: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    estimator: str,
    mask_seed: int | torch.Tensor,
    mask_id: int,
    num_samples: int = 1,
    prompt_mask_prob: float = 0.0,
    attention_mask: torch.Tensor | None = None,
    prompt_mask_exclude: torch.Tensor | None = None,
    normalize: bool = False,
    complementary_t: float | None = None,
) -> LikelihoodEstimate:
    """Estimate log p(response | prompt) per row with the named estimator (see module docstring)."""
    _validate(sequences, response_mask, attention_mask, prompt_mask_exclude, estimator, num_samples,
              prompt_mask_prob, mask_id)
    response = response_mask.to(torch.bool)
    if complementary_t is not None and (estimator != "complementary" or not 0.0 < complementary_t < 1.0):
        raise ValueError(f"complementary_t must be in (0, 1) and only with estimator='complementary', "
                         f"got {complementary_t} with {estimator!r}")
    passes = _masks(estimator, sequences, response, attention_mask, prompt_mask_exclude, mask_seed,
                    num_samples, prompt_mask_prob, complementary_t)
    device = sequences.device
    token_logp: torch.Tensor = torch.zeros(sequences.shape, device=device)
    scored_count = torch.zeros(sequences.shape, dtype=torch.long, device=device)
    for one in passes:
        noisy, scored = one.noisy.to(device), one.scored.to(device)
        logits = model_fn(apply_mask(sequences, noisy, mask_id), attention_mask)  # (B, L, V)
        if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(sequences.shape):
            raise ValueError(f"model_fn must return (B, L, V) logits for {tuple(sequences.shape)}, got {tuple(logits.shape)}")
        logp = torch.log_softmax(logits[scored].float(), dim=-1)  # (n, V)
        picked = logp.gather(1, sequences[scored].unsqueeze(1)).squeeze(1)  # (n,)
        weight = one.weight.to(device=device, dtype=picked.dtype)[scored.nonzero(as_tuple=True)[0]]
        contribution = torch.zeros(sequences.shape, device=device, dtype=picked.dtype).masked_scatter(scored, picked * weight)
        token_logp = token_logp + contribution / num_samples
        scored_count += scored.long()
    loglik = token_logp.sum(dim=-1)
    if normalize:
        loglik = loglik / response.sum(dim=-1).clamp(min=1).to(loglik.dtype)
    return LikelihoodEstimate(loglik=loglik, token_logp=token_logp, scored_count=scored_count, num_forward=len(passes))
