"""Policy protocols (docs/design.md, "Public API"): what evaluation needs and what the trainer needs.

* :class:`Policy` -- ``act(observations, num_samples=1) -> list[list[action]]``: for each
  observation ``{"image": uint8[H, W, 3], "prompt": str}``, ``num_samples`` env actions.
* :func:`as_policy` -- any callable ``obs -> action`` becomes a :class:`Policy`.
* :class:`TrainablePolicy` -- the complete contract the trainer uses: ``model``, ``decoding``,
  ``supports_forcing`` / ``supports_tree_search``, ``rollout`` and ``rollout_from`` (token ids,
  response masks, decoded actions and, for diffusion, the unmask record),
  ``log_likelihood`` / ``log_likelihood_terms`` (exact log-prob for autoregressive models, an
  ELBO estimate for diffusion models), ``scored_mask``, ``sft_rollouts``,
  ``decoding_settings``, ``save_pretrained`` / ``from_pretrained``. :func:`require_trainable`
  names missing members; :func:`agents.check_policy` checks behaviour.
* :class:`Rollouts` -- one record per sampled response. Rows are observation-major: row
  ``i * num_samples + j`` is sample ``j`` of observation ``i`` (``prompt_index`` says which).

``forced`` (answer forcing): ``None`` or a list with one entry per observation or one per
output row; an entry is ``None`` (free sampling) or a text suffix (e.g.
``"<answer>42</answer>"``) that is tokenized and fixed as the last tokens of the text part
of the response from the start of sampling; the model writes everything before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from agents.state_codec import register_state_type

__all__ = [
    "TRAINABLE_MEMBERS", "CallablePolicy", "Policy", "Rollouts", "TrainablePolicy", "as_policy", "expand_forced",
    "missing_members", "require_trainable",
]  # fmt: skip


@runtime_checkable
class Policy(Protocol):
    """Anything that maps observations to env actions."""

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[Any]]:
        """``num_samples`` actions for each observation (outer list: observations)."""
        ...


@register_state_type
@dataclass
class Rollouts:
    """Sampled responses of a batch: token ids, masks, decoded text/actions, unmask record."""

    sequences: torch.Tensor  # (B, L) long: prompt + response token ids
    response_mask: torch.Tensor  # (B, L) bool: response positions (scored by the likelihood)
    prompt_index: torch.Tensor  # (B,) long: the observation each row answers
    texts: list[str]  # decoded response text per row
    actions: list[Any]  # env action per row
    attention_mask: torch.Tensor  # (B, L) bool: real (non-padding) positions
    unmask_step: torch.Tensor | None = None  # (B, L) long: -1 prompt, 0 forced, s>=1 step; None for AR
    forced_mask: torch.Tensor | None = None  # (B, L) bool: positions fixed before sampling
    pixel_values: torch.Tensor | None = None  # (B, 3, H, W) float: observed images
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.sequences.shape[0])

    def map_fields(self, fn: Callable[[str, Any], Any]) -> Rollouts:
        """A new record whose every field is ``fn(name, value)``, ``extras`` entries too (as ``"extras.KEY"``).

        Lists that come back are copied, so the new record never shares a list with this one.
        """

        def apply(name: str, value: Any) -> Any:
            out = fn(name, value)
            return list(out) if isinstance(out, list) else out

        values = {f.name: apply(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "extras"}
        return Rollouts(**values, extras={k: apply(f"extras.{k}", v) for k, v in self.extras.items()})

    def left_padded(self, width: int, pad_id: int = 0) -> Rollouts:
        """The same rows left-padded to ``width`` columns (to stack rollouts of other widths).

        Every (B, L) tensor is padded (``pixel_values`` is per row, never): ``sequences`` with
        ``pad_id``, ``unmask_step`` with -1, boolean masks with False, ``extras`` with zeros;
        padding is unattended, so outputs do not change.
        """
        n, length = self.sequences.shape
        if width < length:
            raise ValueError(f"cannot left-pad rollouts of width {length} to a smaller width {width}")
        fills = {"sequences": pad_id, "unmask_step": -1}

        def pad(name: str, value: Any) -> Any:
            if name == "pixel_values" or not isinstance(value, torch.Tensor) or tuple(value.shape[:2]) != (n, length):
                return value
            fill = fills.get(name, 0)
            extra = torch.full((n, width - length, *value.shape[2:]), fill, dtype=value.dtype, device=value.device)
            return torch.cat([extra, value], 1)

        return self.map_fields(pad)

    def to(self, device: torch.device | str) -> Rollouts:
        """The same rollouts with every tensor (including tensors in ``extras``) on ``device``."""
        return self.map_fields(lambda _, value: value.to(device) if isinstance(value, torch.Tensor) else value)


@runtime_checkable
class TrainablePolicy(Policy, Protocol):
    """Everything the one trainer calls on a policy (diffusion, autoregressive or Hugging Face backbone).

    :func:`agents.check_policy` runs a policy through every member on tiny inputs. Shapes: ``B``
    rows, ``L`` columns of ``[left padding, prompt, response]``; tensors come back on the CPU
    unless said otherwise; likelihoods come back on the model's device with gradients.
    """

    #: the network the trainer optimises (AdamW over its parameters, prepared by accelerate)
    model: torch.nn.Module
    #: sampling settings: a dataclass (``agents.diffusion.DecodingConfig``: ``gen_length``,
    #: ``steps``, ``block_length``, ``temperature``, ``remasking``, ``threshold``,
    #: ``task_gen_length``) with ``validate() -> self``; the trainer replaces it with
    #: ``dataclasses.replace(policy.decoding, ...)`` around rollouts and evaluation
    decoding: Any
    #: whether ``rollout(..., forced=...)`` honours forced suffixes (answer forcing); if False it raises ValueError
    supports_forcing: bool
    #: whether ``rollout_from`` works (tree search); if False it raises NotImplementedError
    supports_tree_search: bool

    def rollout(
        self,
        observations: list[dict],
        num_samples: int = 1,
        forced: Sequence[str | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """``num_samples`` responses per observation as :class:`Rollouts` (B = N * num_samples, observation-major).

        ``sequences`` (B, L) long; ``response_mask``/``attention_mask`` (B, L) bool; ``prompt_index``
        (B,) long; ``texts``/``actions`` B entries (actions are env actions). ``forced``: one text
        suffix (or None) per observation or per row (:func:`expand_forced`); a forced suffix is the
        last tokens of the response's text part, unchanged, and ``forced_mask`` marks it. The same
        seeded ``generator`` gives the same rollouts.
        """
        ...

    def rollout_from(
        self,
        observations: list[dict],
        parents: Rollouts,
        step: int,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """Continue parent row ``i`` (one per observation) ``num_samples`` times from its state after ``step`` steps.

        Tree search. Positions the parent fixed at steps <= ``step`` (and forced positions) are
        kept; the result has the parents' layout and ``len(observations) * num_samples`` rows.
        """
        ...

    def log_likelihood(self, rollouts: Rollouts, estimator: str, mask_seed: int) -> torch.Tensor:
        """Per-row log-likelihood (or ELBO estimate) of the responses, float (B,) with gradients.

        Finite, and deterministic for a fixed ``mask_seed`` (the old, current and reference
        policies of one batch see the same masks).
        """
        ...

    def log_likelihood_terms(
        self,
        rollouts: Rollouts,
        estimator: str,
        mask_seed: int,
        num_samples: int = 1,
        prompt_mask_prob: float = 0.0,
    ) -> Any:
        """The whole estimate: an ``agents.diffusion.likelihood.LikelihoodEstimate``.

        ``loglik`` (B,) with gradients (``num_samples`` mask draws averaged), ``token_logp``
        (B, L) float aligned with the rollouts' columns (zero outside :meth:`scored_mask`, rows
        summing to ``loglik``), ``scored_count`` (B, L) long. ``prompt_mask_prob`` > 0 (d1's
        random prompt masking) may be refused with ValueError by policies without it.
        """
        ...

    def scored_mask(self, rollouts: Rollouts) -> torch.Tensor:
        """(B, L) bool: the positions the likelihood scores; a subset of ``response_mask``, never the prompt."""
        ...

    def sft_rollouts(self, observations: list[dict], targets: list[str | dict]) -> Rollouts:
        """Reference responses as :class:`Rollouts` (one row per observation; SFT and the ``sft`` regularizer).

        A target is the solution text, or ``{"text", "image"}`` for image-edit problems; rows are
        laid out as ``rollout`` lays out its responses, so one likelihood call scores both.
        """
        ...

    def decoding_settings(self) -> dict[str, Any]:
        """JSON-able decoding settings (recorded with results and checkpoints)."""
        ...

    def save_pretrained(self, path: str) -> None:
        """Write everything needed to rebuild the policy to directory ``path`` (weights, tokenizer, metadata)."""
        ...

    @classmethod
    def from_pretrained(cls, path: str) -> TrainablePolicy:
        """Rebuild a policy saved with ``save_pretrained``: same weights, decoding and outputs."""
        ...


#: every member of :class:`TrainablePolicy` (attributes and methods)
TRAINABLE_MEMBERS: tuple[str, ...] = (
    "act", "model", "decoding", "supports_forcing", "supports_tree_search", "rollout", "rollout_from",
    "log_likelihood", "log_likelihood_terms", "scored_mask", "sft_rollouts", "decoding_settings",
    "save_pretrained", "from_pretrained",
)  # fmt: skip


def missing_members(policy: Any) -> list[str]:
    """The :class:`TrainablePolicy` members ``policy`` lacks (empty when it has them all)."""
    return [name for name in TRAINABLE_MEMBERS if not hasattr(policy, name)]


def require_trainable(policy: Any) -> Any:
    """``policy`` itself; ``TypeError`` naming the missing :class:`TrainablePolicy` members otherwise."""
    missing = missing_members(policy)
    if missing:
        raise TypeError(
            f"{type(policy).__name__} is not a TrainablePolicy: it lacks {missing} (see agents.policy.TrainablePolicy; "
            "run agents.check_policy(policy) for what each member must do)"
        )
    if not isinstance(policy.model, torch.nn.Module):
        raise TypeError(f"{type(policy).__name__}.model must be a torch.nn.Module, got {type(policy.model).__name__}")
    return policy


class CallablePolicy:
    """A :class:`Policy` that calls ``fn(observation)`` once per requested sample."""

    def __init__(self, fn: Callable[[dict], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"as_policy needs a callable obs -> action, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[Any]]:
        """``[[fn(obs) for each sample] for each obs]``."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return [[self.fn(obs) for _ in range(num_samples)] for obs in observations]

    def __repr__(self) -> str:
        return f"CallablePolicy({self.name})"


def as_policy(fn: Callable[[dict], Any] | Policy) -> Policy:
    """``fn`` itself if it already has ``act``, else a :class:`CallablePolicy` around it."""
    if isinstance(fn, Policy):
        return fn
    return CallablePolicy(fn)


def expand_forced(
    forced: Sequence[str | None] | None, num_observations: int, num_samples: int
) -> list[str | None]:
    """One forced suffix (or None) per output row from a per-observation or per-row list."""
    rows = num_observations * num_samples
    if forced is None:
        return [None] * rows
    forced = list(forced)
    bad = [f for f in forced if f is not None and not isinstance(f, str)]
    if bad:
        raise TypeError(f"forced entries must be str or None, got {type(bad[0]).__name__}")
    if len(forced) == rows:
        return forced
    if len(forced) == num_observations:
        return [f for f in forced for _ in range(num_samples)]
    raise ValueError(
        f"forced must have one entry per observation ({num_observations}) or per row ({rows}), got {len(forced)}"
    )
