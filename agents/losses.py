"""The unified LaViDa-R1 objective and its pieces, as pure tensor functions (docs/design.md, "Training").

Advantages (rows of a batch are grouped by ``group_ids``: any ids, equal id = same group):

* :func:`grpo_advantages`: ``A = (r - mean_group(r)) / (std + eps)`` as TRL's GRPOTrainer:
  unbiased std (Bessel), ``eps = 1e-4``; ``scale`` ``True``/``"group"`` divides by the
  group's std, ``"batch"`` by the std of the whole batch, ``False``/``"none"`` only centres.
  A group of one row has std 0 (its advantage is 0).
* :func:`distill_advantages`: 1 for the best-reward row of its group, 0 otherwise. Ties for
  the best: the first row (lowest index) wins. A group whose rewards are all equal (max - min
  <= ``tie_tol``) has no best row: all 0 (distilling an arbitrary sample of a group without
  signal would be plain SFT on it, wrong answers included).
* :func:`mix_advantages`: ``gamma * A_distill + (1 - gamma) * A_grpo``.

Losses (``loglik`` is a per-row sequence log-likelihood / ELBO estimate with gradients):

* :func:`unified_loss`: ``sum_i -s_i / Z`` over the rows of one batch, where the surrogate
  ``s_i = A_i * l_i`` (on-policy), or ``min(rho_i A_i, clip(rho_i, 1-eps, 1+eps_high) A_i)``
  with ``rho_i = exp(l_i - l_old_i)`` for rows with an old log-likelihood (same mask seeds;
  ``updates_per_batch > 1``); the gradients agree at ``rho = 1``. ``loss_type`` (TRL's names)
  picks ``l_i`` and ``Z``: ``sequence`` (docs/design.md: ``l_i`` = ELBO, ``Z = N`` rows), ``grpo``
  (``l_i`` = ELBO / tokens_i, ``Z = N``), ``bnpo``/``dapo`` (``Z`` = response tokens),
  ``dr_grpo`` (``Z = N * max_length``); an explicit ``normalizer`` replaces ``Z``.
* :func:`kl_k3`: Schulman's k3 estimator ``exp(d) - d - 1`` with ``d = l_ref - l_policy``:
  per token and averaged over each row's mask for (B, T) inputs; for (B,) sequence
  log-likelihoods, of the per-token mean log-ratio ``d / tokens`` when ``token_counts`` is
  given (the ELBO does not split into exact per-token terms), else of the sequence log-ratio.
* :func:`lavida_loss`: ``loss = pg + sft + kl``. ``pg`` = :func:`unified_loss` over the
  rollout rows; ``regularizer="sft"`` adds SFT rows (``A = sft_weight``, never a ratio) to
  the same sum, ``"kl"`` adds ``beta * mean_rows kl_k3`` against a frozen reference, and
  ``"none"`` adds nothing. ``Z`` is computed from the rollout rows in every arm (the paper's
  ``1/N`` over rollouts + SFT rows differs by the fixed factor ``(N_rollout + N_sft) /
  N_rollout``), so the three arms differ exactly in the regularizer term.
* :func:`sft_loss`: the SFT objective ``mean_b(-ELBO_b / n_b)`` of SFT-only steps (LLaDA's SFT
  loss with the ``random_mask`` estimator: masked tokens' CE weighted 1/t, per response token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "LOSS_TYPES",
    "LossTerms",
    "UnifiedLoss",
    "distill_advantages",
    "frac_zero_std",
    "group_std",
    "grpo_advantages",
    "kl_k3",
    "lavida_loss",
    "mix_advantages",
    "sft_loss",
    "unified_loss",
]

LOSS_TYPES = ("sequence", "grpo", "bnpo", "dr_grpo", "dapo")
REGULARIZERS = ("sft", "kl", "none")


# ----- advantages ---------------------------------------------------------------------
def _groups(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inverse (R,), counts (G,))``: each row's group number 0..G-1 and the group sizes."""
    if values.dim() != 1 or group_ids.shape != values.shape:
        raise ValueError(f"rewards (R,) and group_ids (R,) must be 1-D of equal length, got {tuple(values.shape)} and {tuple(group_ids.shape)}")
    _, inverse, counts = torch.unique(group_ids.to(values.device), return_inverse=True, return_counts=True)
    return inverse, counts


def _group_sum(values: torch.Tensor, inverse: torch.Tensor, num_groups: int) -> torch.Tensor:
    return torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)


def group_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Unbiased reward std of every group (G,), in order of sorted group id (0 for a one-row group)."""
    rewards = rewards.double()
    inverse, counts = _groups(rewards, group_ids)
    mean = _group_sum(rewards, inverse, len(counts)) / counts
    sq = _group_sum((rewards - mean[inverse]) ** 2, inverse, len(counts))
    return torch.where(counts > 1, sq / (counts - 1).clamp(min=1), torch.zeros_like(sq)).sqrt()


def frac_zero_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Fraction of groups whose rewards all agree (std ~ 0): TRL's ``frac_reward_zero_std`` per group."""
    std = group_std(rewards, group_ids)
    return float(torch.isclose(std, torch.zeros_like(std)).double().mean()) if std.numel() else 0.0


def _scale_mode(scale: bool | str) -> str:
    if isinstance(scale, bool):
        return "group" if scale else "none"
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be True/False or 'group'/'batch'/'none' (TRL's scale_rewards), got {scale!r}")
    return scale


def grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale: bool | str = True, eps: float = 1e-4
) -> torch.Tensor:
    """Group-normalised advantages (R,): ``(r - mean_group) / (std + eps)`` (see module docstring)."""
    mode = _scale_mode(scale)
    r = rewards.double()
    inverse, counts = _groups(r, group_ids)
    centred = r - (_group_sum(r, inverse, len(counts)) / counts)[inverse]
    if mode == "group":
        centred = centred / (group_std(r, group_ids)[inverse] + eps)
    elif mode == "batch":
        centred = centred / ((r.std() if r.numel() > 1 else r.new_zeros(())) + eps)
    return centred.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def distill_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, tie_tol: float = 1e-6) -> torch.Tensor:
    """1.0 for the first best-reward row of each group with unequal rewards, else 0.0 (R,)."""
    r = rewards.double()
    inverse, counts = _groups(r, group_ids)
    g = len(counts)
    gmax = torch.full((g,), float("-inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, inverse, r, "amax")
    gmin = torch.full((g,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, inverse, r, "amin")
    rows = torch.arange(len(r), device=r.device)
    best_rows = torch.where(r == gmax[inverse], rows, len(r))
    first = torch.full((g,), len(r), device=r.device).scatter_reduce(0, inverse, best_rows, "amin")
    has_best = (gmax - gmin) > tie_tol
    out = (rows == first[inverse]) & has_best[inverse]
    return out.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def mix_advantages(gamma: float, a_distill: torch.Tensor, a_grpo: torch.Tensor) -> torch.Tensor:
    """LaViDa-R1's rollout weight ``gamma * A_distill + (1 - gamma) * A_grpo``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if a_distill.shape != a_grpo.shape:
        raise ValueError(f"a_distill {tuple(a_distill.shape)} and a_grpo {tuple(a_grpo.shape)} must have one shape")
    return gamma * a_distill + (1.0 - gamma) * a_grpo


# ----- losses ---------------------------------------------------------------------------
@dataclass
class UnifiedLoss:
    """Result of :func:`unified_loss`."""

    loss: torch.Tensor  # () differentiable
    per_row: torch.Tensor  # (B,) -surrogate_i / Z: loss == per_row.sum()
    normalizer: float  # Z
    clip: dict[str, float] = field(default_factory=dict)  # TRL's clip_ratio metrics over ratio rows


def _normalizer(loss_type: str, rows: int, token_counts, max_length, normalizer) -> float:
    if normalizer is not None:
        if not normalizer > 0:
            raise ValueError(f"normalizer must be > 0, got {normalizer}")
        return float(normalizer)
    if loss_type in ("sequence", "grpo"):
        return float(max(rows, 1))
    if loss_type in ("bnpo", "dapo"):
        return float(max(float(token_counts.sum()), 1.0))
    if max_length is None or max_length < 1:
        raise ValueError(f"loss_type 'dr_grpo' needs max_length >= 1 (the longest response), got {max_length}")
    return float(max(rows, 1) * max_length)


def _check_loss_args(loglik, advantages, token_counts, loss_type):
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if loglik.dim() != 1 or advantages.shape != loglik.shape:
        raise ValueError(f"loglik (B,) and advantages (B,) must be 1-D of equal length, got {tuple(loglik.shape)} and {tuple(advantages.shape)}")
    if token_counts is None and loss_type in ("grpo", "bnpo", "dapo"):
        raise ValueError(f"loss_type {loss_type!r} needs token_counts (B,): response tokens per row")
    if token_counts is not None and token_counts.shape != loglik.shape:
        raise ValueError(f"token_counts must have shape {tuple(loglik.shape)}, got {tuple(token_counts.shape)}")


def _clip_stats(ratio, advantages, low, high, rows) -> dict[str, float]:
    if not bool(rows.any()):
        return {"clip_ratio": 0.0, "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0}
    ratio, adv = ratio.detach()[rows], advantages.detach()[rows]
    low_clipped = (ratio < 1 - low) & (adv < 0)
    high_clipped = (ratio > 1 + high) & (adv > 0)
    return {
        "clip_ratio": float((low_clipped | high_clipped).double().mean()),
        "clip_ratio/low_mean": float(low_clipped.double().mean()),
        "clip_ratio/high_mean": float(high_clipped.double().mean()),
    }


def unified_loss(
    loglik: torch.Tensor,
    advantages: torch.Tensor,
    *,
    token_counts: torch.Tensor | None = None,
    loss_type: str = "sequence",
    max_length: int | None = None,
    normalizer: float | None = None,
    old_loglik: torch.Tensor | None = None,
    ratio_mask: torch.Tensor | None = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> UnifiedLoss:
    """``-(1/Z) sum_i surrogate_i`` over one concatenated batch (see the module docstring)."""
    _check_loss_args(loglik, advantages, token_counts, loss_type)
    advantages = advantages.to(loglik.dtype).detach()
    z = _normalizer(loss_type, loglik.shape[0], token_counts, max_length, normalizer)
    scale = 1.0 / token_counts.to(loglik.dtype).clamp(min=1) if loss_type == "grpo" else torch.ones_like(loglik)
    surrogate = advantages * loglik * scale
    clip: dict[str, float] = {}
    if old_loglik is not None:
        if old_loglik.shape != loglik.shape:
            raise ValueError(f"old_loglik must have shape {tuple(loglik.shape)}, got {tuple(old_loglik.shape)}")
        rows = torch.ones_like(loglik, dtype=torch.bool) if ratio_mask is None else ratio_mask.to(torch.bool)
        high = epsilon if epsilon_high is None else epsilon_high
        log_ratio = (loglik - old_loglik.detach().to(loglik.dtype)) * scale
        ratio = torch.exp(torch.where(rows, log_ratio, torch.zeros_like(log_ratio)))
        clipped = torch.minimum(ratio * advantages, ratio.clamp(1 - epsilon, 1 + high) * advantages)
        surrogate = torch.where(rows, clipped, surrogate)
        clip = _clip_stats(ratio, advantages, epsilon, high, rows)
    per_row = -surrogate / z
    return UnifiedLoss(loss=per_row.sum(), per_row=per_row, normalizer=z, clip=clip)


def kl_k3(
    ll_policy: torch.Tensor,
    ll_ref: torch.Tensor,
    mask: torch.Tensor | None = None,
    token_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row k3 KL estimate (B,) of the policy to a frozen reference (see the module docstring)."""
    if ll_policy.shape != ll_ref.shape:
        raise ValueError(f"ll_policy {tuple(ll_policy.shape)} and ll_ref {tuple(ll_ref.shape)} must have one shape")
    d = ll_ref.detach().to(ll_policy.dtype) - ll_policy
    if ll_policy.dim() == 2:
        m = torch.ones_like(d) if mask is None else mask.to(d.dtype)
        k3 = (torch.exp(d) - d - 1) * m
        return k3.sum(-1) / m.sum(-1).clamp(min=1)
    if ll_policy.dim() != 1:
        raise ValueError(f"kl_k3 takes (B,) sequence or (B, T) token log-likelihoods, got {tuple(ll_policy.shape)}")
    if token_counts is not None:
        d = d / token_counts.to(d.dtype).clamp(min=1)
    return torch.exp(d) - d - 1


@dataclass
class LossTerms:
    """The unified objective split into its terms (``loss = pg + sft + kl``) and metrics."""

    loss: torch.Tensor  # () differentiable
    pg: torch.Tensor  # () rollout (policy-gradient) term
    sft: torch.Tensor  # () SFT-row term (0 unless regularizer 'sft')
    kl: torch.Tensor  # () beta * mean k3 (0 unless regularizer 'kl')
    kl_mean: float  # mean k3 per row without beta (NaN without a reference)
    normalizer: float
    clip: dict[str, float] = field(default_factory=dict)


def lavida_loss(
    loglik: torch.Tensor,
    advantages: torch.Tensor,
    *,
    regularizer: str = "sft",
    sft_loglik: torch.Tensor | None = None,
    sft_weight: float = 1.0,
    ref_loglik: torch.Tensor | None = None,
    beta: float = 0.0,
    token_counts: torch.Tensor | None = None,
    sft_token_counts: torch.Tensor | None = None,
    loss_type: str = "sequence",
    max_length: int | None = None,
    normalizer: float | None = None,
    old_loglik: torch.Tensor | None = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> LossTerms:
    """Unified loss of rollout rows plus the chosen regularizer term (see the module docstring)."""
    if regularizer not in REGULARIZERS:
        raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}")
    _check_loss_args(loglik, advantages, token_counts, loss_type)
    z = _normalizer(loss_type, loglik.shape[0], token_counts, max_length, normalizer)
    common = dict(loss_type=loss_type, max_length=max_length, normalizer=z, epsilon=epsilon, epsilon_high=epsilon_high)
    zero = loglik.new_zeros(())
    sft, kl, kl_mean = zero, zero, float("nan")
    if regularizer == "sft":
        if sft_loglik is None or sft_loglik.numel() == 0:
            raise ValueError("regularizer 'sft' needs sft_loglik (B_sft,) of the SFT rows; use regularizer 'none' to drop them")
        if loss_type in ("grpo", "bnpo", "dapo") and sft_token_counts is None:
            raise ValueError(f"loss_type {loss_type!r} needs sft_token_counts for the SFT rows")
        both = unified_loss(
            torch.cat([loglik, sft_loglik.to(loglik.dtype)]),
            torch.cat([advantages.to(loglik.dtype), torch.full_like(sft_loglik, sft_weight, dtype=loglik.dtype)]),
            token_counts=None if token_counts is None else torch.cat([token_counts, sft_token_counts.to(token_counts.dtype)]),
            old_loglik=None if old_loglik is None else torch.cat([old_loglik.to(loglik.dtype), sft_loglik.detach().to(loglik.dtype)]),
            ratio_mask=torch.cat([torch.ones_like(loglik, dtype=torch.bool), torch.zeros_like(sft_loglik, dtype=torch.bool)]),
            **common,
        )  # fmt: skip
        n = loglik.shape[0]
        pg_rows, sft = both.per_row[:n], both.per_row[n:].sum()
        pg, clip = pg_rows.sum(), both.clip
    else:
        rollout = unified_loss(loglik, advantages, token_counts=token_counts, old_loglik=old_loglik, **common)
        pg, clip = rollout.loss, rollout.clip
    if regularizer == "kl":
        if ref_loglik is None:
            raise ValueError("regularizer 'kl' needs ref_loglik (B,) from the frozen reference policy")
        if not beta > 0:
            raise ValueError(f"regularizer 'kl' needs beta > 0, got {beta}")
        per_row = kl_k3(loglik, ref_loglik, token_counts=token_counts)
        kl, kl_mean = beta * per_row.mean(), float(per_row.detach().mean())
    return LossTerms(loss=pg + sft + kl, pg=pg, sft=sft, kl=kl, kl_mean=kl_mean, normalizer=z, clip=clip)


def sft_loss(loglik: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """``mean_b(-loglik_b / n_b)``: per-token negative ELBO of SFT rows (B,) with scored positions n_b (B,)."""
    return -(loglik / token_counts.clamp(min=1)).mean()
