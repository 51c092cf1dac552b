"""``DiffusionPolicy``: the LaViDa-R1 agent -- a masked-diffusion model acting on env observations.

Contract (docs/design.md, "Public API" and "Training"): implements :class:`agents.policy.Policy` and
:class:`agents.policy.TrainablePolicy`.

* ``rollout(observations, num_samples, forced, generator) -> Rollouts``: prompts are built
  by :mod:`agents.diffusion.layout`; rows sharing a response layout are sampled together by
  :func:`agents.diffusion.sampler.sample` with :class:`DecodingConfig` (LLaDA names); the
  record holds ``unmask_step`` (-1 prompt/padding, 0 forced, s >= 1 the step that revealed
  the position) and ``extras`` (``task``, ``code_mask``, ``nfe``).
* ``log_likelihood(rollouts, estimator, mask_seed) -> (B,)`` delegates to
  :func:`agents.diffusion.likelihood.estimate_log_likelihood` (``mean_field`` |
  ``random_mask`` | ``complementary``), with gradients; ``num_samples`` mask samples (pairs)
  are averaged. ``log_likelihood_terms`` returns the whole estimate (per-position
  ``token_logp`` aligned with the rollouts' columns, e.g. for text/image NLL logging).
  The fixed ``<boi>``/``<eoi>`` around an image span (template tokens the sampler never
  chooses; text positions may not predict them) are not scored: ``scored_mask``.
* The model function handed to the sampler and the estimators is
  ``model_fn(input_ids, attention_mask) -> logits``: rows carry their batch index in a
  leading, attention-masked tag column, so the bound images and per-position vocabulary
  constraints follow any subset or reordering of rows. Image-code positions may only
  predict image codes; text positions never predict ``<mask>``, ``<pad>``, ``<image>``,
  ``<boi>``, ``<eoi>`` or image codes.
* ``save_pretrained(dir)`` writes the model (``config.json`` + safetensors), the tokenizer
  and ``policy_config.json`` (decoding settings, codec, seed); ``from_pretrained(dir)``
  rebuilds exactly the same policy.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from agents.diffusion.codec import ImageCodec, PaletteCodec, codec_from_dict
from agents.diffusion.layout import decode_response, task_of
from agents.diffusion.model import DiffusionConfig, DiffusionModel
from agents.diffusion.likelihood import ESTIMATORS
from agents.diffusion.sampler import check_cache, check_threshold
from agents.diffusion.rows import RowBatch, assemble, tagged_model_fn, with_tags
from agents.diffusion.tokenizer import SpecialIds, build_tokenizer, special_ids
from agents.policy import Rollouts, expand_forced
from agents.policy_files import check_policy_files
from agents.token_policy import TokenPolicy

if TYPE_CHECKING:
    from agents.diffusion.likelihood import LikelihoodEstimate

__all__ = ["POLICY_CONFIG", "DecodingConfig", "DiffusionPolicy"]

POLICY_CONFIG = "policy_config.json"
#: Text positions per task unless configured (difficulty-1 reference solutions fit them).
DEFAULT_TASK_GEN_LENGTH: dict[str, int] = {"grounding": 160, "image_edit": 192}


@dataclass
class DecodingConfig:
    """Sampling settings (LLaDA's names); per-task text lengths override ``gen_length``."""

    gen_length: int = 64
    steps: int = 64
    block_length: int = 32
    temperature: float = 0.0
    remasking: str = "low_confidence"
    threshold: float | None = None
    task_gen_length: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TASK_GEN_LENGTH))
    cache: str = "none"  # KV cache: none (exact reference) | prefix | dual (agents.diffusion.sampler)

    def validate(self) -> DecodingConfig:
        """Raise ``ValueError`` naming the bad field; return self."""
        for name in ("gen_length", "steps", "block_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DecodingConfig.{name} must be a positive int, got {value!r}")
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"DecodingConfig.remasking must be 'low_confidence' or 'random', got {self.remasking!r}")
        if self.temperature < 0:
            raise ValueError(f"DecodingConfig.temperature must be >= 0, got {self.temperature}")
        check_threshold(self.threshold, "DecodingConfig.threshold")
        check_cache(self.cache, "DecodingConfig.cache")
        bad = {k: v for k, v in self.task_gen_length.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"DecodingConfig.task_gen_length values must be positive ints, got {bad}")
        return self

    def text_length(self, task: str) -> int:
        """Text positions of a response for ``task``."""
        return int(self.task_gen_length.get(task, self.gen_length))

    def plan(self, length: int, text_length: int | None = None) -> tuple[int, int | tuple[int, ...]]:
        """``(steps, block_length or block sizes)`` for a response of ``length`` positions.

        Blocks of ``block_length`` when it divides ``length``; otherwise, for an image response
        (``text_length`` text positions, then the image span), two blocks -- the text, then the
        image -- so a KV cache has a finished block to skip; otherwise one block. ``steps`` is
        the total number of denoising steps (at most one per position), rounded up to a multiple
        of the number of equal blocks (two unequal blocks share it in proportion to their sizes).
        """
        steps = min(length, self.steps)
        if length % self.block_length == 0:
            blocks = length // self.block_length
            return -(-steps // blocks) * blocks, self.block_length
        if text_length is not None and 0 < text_length < length:
            return max(2, steps), (text_length, length - text_length)
        return steps, length


def seeded_parts(
    seed: int, codec: ImageCodec | None, make_model: Callable[[PreTrainedTokenizerBase, SpecialIds], Any]
) -> tuple[Any, PreTrainedTokenizerBase, ImageCodec]:
    """A fresh policy's parts: the codec (default PaletteCodec), its tokenizer, and ``make_model(tokenizer, ids)``
    initialised under ``seed`` without touching the global RNG (shared by DiffusionPolicy.tiny and ARPolicy.tiny)."""
    codec = codec if codec is not None else PaletteCodec()
    tokenizer = build_tokenizer(codec.codebook_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(tokenizer, special_ids(tokenizer))
    return model, tokenizer, codec


class DiffusionPolicy(TokenPolicy):
    """Masked-diffusion policy over env observations (text answers and edited images)."""

    def __init__(
        self,
        model: DiffusionModel,
        tokenizer: PreTrainedTokenizerBase,
        codec: ImageCodec | None = None,
        decoding: DecodingConfig | None = None,
        seed: int = 0,
    ) -> None:
        self._setup(model, tokenizer, codec, decoding or DecodingConfig(), seed, token_fields=("mask", "image"))

    # ----- construction -------------------------------------------------------------
    @classmethod
    def tiny(cls, seed: int = 0, codec: ImageCodec | None = None, **config: Any) -> DiffusionPolicy:
        """A freshly initialised small policy (~1M parameters); ``config`` overrides model fields."""
        decoding = config.pop("decoding", None)

        def make_model(tokenizer: PreTrainedTokenizerBase, ids: SpecialIds) -> DiffusionModel:
            values = dict(
                vocab_size=len(tokenizer), mask_token_id=ids.mask, pad_token_id=ids.pad,
                eos_token_id=ids.eos, image_token_id=ids.image,
            )  # fmt: skip
            return DiffusionModel(DiffusionConfig(**{**values, **config}))

        model, tokenizer, codec = seeded_parts(seed, codec, make_model)
        return cls(model, tokenizer, codec, decoding, seed=seed)

    def decoding_settings(self) -> dict[str, Any]:
        """The decoding settings as a JSON-able dict (recorded with results)."""
        return asdict(self.decoding)

    # ----- Policy / TrainablePolicy ---------------------------------------------------
    def rollout(
        self,
        observations: list[dict],
        num_samples: int = 1,
        forced: Sequence[str | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """Sample ``num_samples`` responses per observation; ``forced`` holds text suffixes."""
        suffixes = expand_forced(forced, len(observations), num_samples)
        return self._generate(observations, num_samples, [self.suffix_ids(s) for s in suffixes], generator)

    def rollout_from(
        self,
        observations: list[dict],
        parents: Rollouts,
        step: int,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """Continue parent row ``i`` (of observation ``i``) ``num_samples`` times from its state after ``step`` steps.

        The state is rebuilt from the parent's final tokens and unmask record (positions
        revealed at a step <= ``step`` and forced positions are kept); only the remaining
        denoising steps run (tree search).
        """
        if len(parents) != len(observations) or parents.unmask_step is None or parents.forced_mask is None:
            raise ValueError(
                f"rollout_from needs one diffusion rollout row per observation (with unmask_step and forced_mask); "
                f"got {len(parents)} rows for {len(observations)} observations"
            )
        suffixes = []
        for i in range(len(observations)):
            text = parents.response_mask[i] & ~parents.extras["code_mask"][i] & parents.forced_mask[i]
            suffixes += [parents.sequences[i][text].tolist() or None] * num_samples
        return self._generate(observations, num_samples, suffixes, generator, parents=parents, step=step)

    @torch.no_grad()
    def _generate(
        self,
        observations: list[dict],
        num_samples: int,
        suffixes: list[list[int] | None],
        generator: torch.Generator | None,
        parents: Rollouts | None = None,
        step: int = 0,
    ) -> Rollouts:
        from agents.diffusion.sampler import rebuild_state, sample

        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        tasks = [task_of(obs) for obs in observations]
        obs_of_row = [i for i in range(len(observations)) for _ in range(num_samples)]
        pixel_values = self.pixel_values(observations).to(self.device)[obs_of_row]
        prompts = [self.prompt_ids(obs) for obs in observations]
        batch = RowBatch(
            prompts=[prompts[i] for i in obs_of_row], layouts=[self.layout(tasks[i]) for i in obs_of_row], suffixes=suffixes
        )
        was_training = self.model.training
        self.model.eval()
        responses, records, nfe = [None] * len(obs_of_row), [None] * len(obs_of_row), 0
        try:
            for layout, rows in batch.groups().items():
                prompt_ids, attention, forced_ids, forced_mask, codes, resp = batch.group_inputs(rows, self.ids)
                steps, block = self.decoding.plan(layout.length, layout.text_length if layout.grid else None)
                state = None
                if parents is not None:
                    parent_rows = [obs_of_row[r] for r in rows]
                    if int(parents.response_mask[parent_rows[0]].sum()) != layout.length:
                        raise ValueError(f"parent row {parent_rows[0]} does not have the {layout.length}-position layout")
                    final = torch.cat([prompt_ids, parents.sequences[parent_rows, -layout.length :]], 1)
                    record = parents.unmask_step[parent_rows, -layout.length :]
                    state = rebuild_state(final.to(self.device), record.to(self.device), step, prompt_ids.shape[1], self.ids.mask)
                    forced_ids = forced_mask = None
                model_fn = tagged_model_fn(self.model, pixel_values, codes.to(self.device), resp.to(self.device), self.ids)
                out = sample(
                    model_fn, prompt_ids.to(self.device), attention.to(self.device),
                    gen_length=layout.length, steps=steps, block_length=block,
                    temperature=self.decoding.temperature, remasking=self.decoding.remasking,
                    threshold=self.decoding.threshold, mask_id=self.ids.mask,
                    forced_ids=None if forced_ids is None else forced_ids.to(self.device),
                    forced_mask=None if forced_mask is None else forced_mask.to(self.device),
                    generator=generator, suppress_ids=self.ids.present("pad", "image"), state=state,
                    cache=self.decoding.cache,
                )  # fmt: skip
                nfe += out.nfe
                for k, row in enumerate(rows):
                    responses[row] = out.sequences[k, -layout.length :].cpu()
                    records[row] = out.unmask_step[k].cpu()
        finally:
            self.model.train(was_training)
        texts, actions = [], []
        for row, response in enumerate(responses):
            obs = observations[obs_of_row[row]]
            size = int(obs["image"].shape[0]) if hasattr(obs.get("image"), "shape") else self.codec.grid
            text, action = decode_response(response, batch.layouts[row], self.tokenizer, self.ids, self.codec, size)
            texts.append(text)
            actions.append(action)
        rollouts = assemble(batch, responses, records, self.ids)
        rollouts.prompt_index = torch.tensor(obs_of_row, dtype=torch.long)
        rollouts.texts, rollouts.actions = texts, actions
        rollouts.pixel_values = pixel_values.cpu()
        rollouts.extras.update(task=[tasks[i] for i in obs_of_row], nfe=nfe)
        return rollouts

    def log_likelihood(
        self, rollouts: Rollouts, estimator: str = "complementary", mask_seed: int = 0, num_samples: int = 1
    ) -> torch.Tensor:
        """Per-row ELBO estimate (B,) of the responses under the current model, with gradients."""
        return self.log_likelihood_terms(rollouts, estimator, mask_seed, num_samples).loglik

    def scored_mask(self, rollouts: Rollouts) -> torch.Tensor:
        """(B, L) bool: the response positions the likelihood scores (all but an image span's fixed ``<boi>``/``<eoi>``)."""
        fixed = self.ids.is_any(rollouts.sequences, "boi", "eoi")
        return rollouts.response_mask.to(torch.bool) & ~fixed

    def log_likelihood_terms(
        self,
        rollouts: Rollouts,
        estimator: str = "complementary",
        mask_seed: int = 0,
        num_samples: int = 1,
        prompt_mask_prob: float = 0.0,
    ) -> LikelihoodEstimate:
        """The full estimate: ``loglik`` (B,) and per-position ``token_logp`` (B, L) aligned with ``rollouts``.

        ``prompt_mask_prob`` (``mean_field`` only, d1): random prompt masking; image
        placeholders and the response's own template positions are never masked.
        """
        from agents.diffusion.likelihood import estimate_log_likelihood

        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
        device = self.device
        code_mask = rollouts.extras.get("code_mask")
        if code_mask is None:
            code_mask = torch.zeros_like(rollouts.response_mask)
        keep = self.ids.is_any(rollouts.sequences, "image") | rollouts.response_mask.to(torch.bool)
        sequences, attention, response_mask, code_mask, keep = with_tags(
            rollouts.sequences, rollouts.attention_mask, self.scored_mask(rollouts), code_mask, keep
        )
        pixel_values = None if rollouts.pixel_values is None else rollouts.pixel_values.to(device)
        model_fn = tagged_model_fn(self.model, pixel_values, code_mask.to(device), response_mask.to(device), self.ids)
        estimate = estimate_log_likelihood(
            model_fn, sequences.to(device), response_mask.to(device), estimator=estimator,
            mask_seed=mask_seed, mask_id=self.ids.mask, attention_mask=attention.to(device), num_samples=num_samples,
            prompt_mask_prob=prompt_mask_prob, prompt_mask_exclude=keep.to(device),
        )  # fmt: skip
        estimate.token_logp, estimate.scored_count = estimate.token_logp[:, 1:], estimate.scored_count[:, 1:]
        return estimate

    # ----- persistence ----------------------------------------------------------------
    def save_pretrained(self, path: str) -> None:
        """Write model, tokenizer and ``policy_config.json`` (decoding, codec, seed) to ``path``."""
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {
            "format": "lavida-diffusion-policy",
            "version": 1,
            "decoding": self.decoding_settings(),
            "codec": self.codec.to_dict(),
            "seed": self.seed,
        }
        with open(os.path.join(path, POLICY_CONFIG), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def from_pretrained(
        cls, path: str, device: str | torch.device | None = None, **decoding_overrides: Any
    ) -> DiffusionPolicy:
        """Rebuild a policy written by :meth:`save_pretrained` (``decoding_overrides``: e.g. ``temperature=0``)."""
        meta, decoding = read_policy_meta(path, "DiffusionPolicy", None, decoding_overrides)
        model = DiffusionModel.from_pretrained(path)
        if device is not None:
            model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, codec_from_dict(meta["codec"]), decoding, seed=int(meta.get("seed", 0)))


def read_policy_meta(
    path: str, kind: str, fmt: str | None = None, decoding_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], DecodingConfig]:
    """A checkpoint's ``policy_config.json`` and its decoding settings, with overrides applied."""
    meta_path = os.path.join(path, POLICY_CONFIG)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{meta_path} not found: {path!r} is not a {kind} checkpoint")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc}); the checkpoint is truncated or corrupt: save it again or use another") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: holds a {type(meta).__name__}, not a policy config object; save the policy again")
    check_policy_files(path)  # model and tokenizer files: named errors before loading
    if fmt is not None and meta.get("format") != fmt:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} is not {fmt!r}; load it with its own class")
    for key in ("decoding", "codec"):
        if key not in meta:
            raise ValueError(f"{meta_path}: missing field {key!r}")
    unknown = sorted(set(decoding_overrides or {}) - set(DecodingConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown decoding setting(s) {unknown} for {kind}; known: {sorted(DecodingConfig.__dataclass_fields__)}")
    try:
        decoding = DecodingConfig(**{**meta["decoding"], **(decoding_overrides or {})})
    except TypeError as exc:
        raise ValueError(f"{meta_path}: bad field 'decoding': {exc}") from None
    decoding.validate()
    return meta, decoding
