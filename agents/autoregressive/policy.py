"""``ARPolicy``: the autoregressive agent backbone -- a tiny causal LM acting on env observations.

Contract (docs/design.md, "Public API"): implements :class:`agents.policy.Policy` and
:class:`agents.policy.TrainablePolicy` with the diffusion policy's inputs and outputs, so the
one trainer, the evaluation and the rewards treat both alike.

* Same tokenizer (:func:`agents.diffusion.tokenizer.build_tokenizer`), codec, prompt
  (``num_patches`` ``<image>`` placeholders then the prompt text: the image is a prefix of
  patch embeddings, :class:`agents.autoregressive.model.ARModel`), response layout
  (:class:`agents.diffusion.layout.ResponseLayout`: ``text_length`` text positions, ``<eos>``
  padded; image tasks then ``<boi>``, ``grid * grid`` codes, ``<eoi>``) and decoding of
  responses into env actions (:func:`agents.diffusion.layout.decode_response`) as
  :class:`agents.DiffusionPolicy`; ``prompt_ids``, ``layout``, ``pixel_values``, ``act`` and
  ``sft_rollouts`` come from their shared base :class:`agents.token_policy.TokenPolicy`.
* ``rollout(observations, num_samples, forced=None, generator=None) -> Rollouts``: rows sharing
  a layout are generated together by ``model.generate`` with a KV cache: the text left to
  right until ``<eos>`` (or ``text_length`` tokens; the rest is ``<eos>`` padding), then for
  image tasks ``<boi>`` and the image codes left to right (then ``<eoi>``). Text positions never
  hold ``<mask>``/``<pad>``/``<image>``/``<boi>``/``<eoi>`` or codes; code positions only codes.
  ``decoding.temperature`` 0 is greedy; > 0 samples ``softmax(logits / T)`` by Gumbel-max with
  ``generator`` (reproducible). ``response_mask`` marks the *sampled* positions (text up to and
  including the first ``<eos>``, and the codes), as TRL's completion mask; ``unmask_step`` is
  None; ``extras``: ``task``, ``code_mask``, ``nfe`` (model calls). Answer forcing (``forced``
  suffixes) needs a bidirectional model and raises ``ValueError`` (``supports_forcing`` is False);
  so does ``rollout_from`` (no intermediate denoising state: ``supports_tree_search`` is False).
* ``token_log_probs(rollouts) -> (B, L)``: EXACT per-token log-probs of the sampled positions
  (:meth:`ARPolicy.scored_mask`; 0 elsewhere) under the same vocabulary constraints as
  sampling, with ``logits / T`` when ``T > 0`` (as TRL's GRPOTrainer); for token-level losses
  (e.g. TRL's per-token GRPO loss). ``log_likelihood(rollouts, estimator, mask_seed)``
  is their row sum (B,); ``estimator``, ``mask_seed``, ``num_samples`` and ``prompt_mask_prob``
  are accepted and ignored (no estimate is needed); ``log_likelihood_terms`` returns both as a
  :class:`agents.diffusion.likelihood.LikelihoodEstimate` (as DiffusionPolicy does). Rows built
  by :func:`agents.sft.build_sft_batch` work too (their ``<eos>``
  padding after the first ``<eos>`` and the ``<boi>``/``<eoi>`` positions are not scored).
* ``sft_loss(observations, targets) -> ()``: plain next-token cross-entropy of the reference
  responses (mean over scored tokens of the batch).
* ``save_pretrained(dir)``: model (``config.json`` + safetensors), tokenizer and
  ``policy_config.json`` (``format: lavida-ar-policy``, decoding, codec, seed);
  ``from_pretrained(dir)`` rebuilds the same policy.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, GenerationConfig, LogitsProcessorList, PreTrainedTokenizerBase

from agents.collectives import active_sync
from agents.diffusion.codec import ImageCodec, codec_from_dict
from agents.diffusion.layout import ResponseLayout, decode_response, task_of
from agents.diffusion.likelihood import LikelihoodEstimate
from agents.autoregressive.model import AllowedTokens, ARConfig, ARModel, GumbelSampling, positions
from agents.diffusion.policy import POLICY_CONFIG, DecodingConfig, read_policy_meta, seeded_parts
from agents.diffusion.rows import NEG_LOGIT, RowBatch, assemble
from agents.diffusion.tokenizer import SpecialIds
from agents.policy import Rollouts, expand_forced
from agents.token_policy import TokenPolicy

__all__ = ["FORMAT", "ARPolicy"]

FORMAT = "lavida-ar-policy"
#: Model size of :meth:`ARPolicy.tiny`: about DiffusionPolicy.tiny()'s parameter count.
TINY_CONFIG: dict[str, Any] = dict(
    hidden_size=128, intermediate_size=448, num_hidden_layers=4, num_attention_heads=4,
    max_position_embeddings=1024, image_size=128, patch_size=16,
)  # fmt: skip


class ARPolicy(TokenPolicy):
    """Causal-LM policy over env observations (text answers and edited images), trained by the same trainer."""

    supports_forcing = False
    supports_tree_search = False

    def __init__(
        self,
        model: ARModel,
        tokenizer: PreTrainedTokenizerBase,
        codec: ImageCodec | None = None,
        decoding: DecodingConfig | None = None,
        seed: int = 0,
    ) -> None:
        self._setup(model, tokenizer, codec, decoding or DecodingConfig(), seed, token_fields=("image",))
        is_code = torch.zeros(model.config.vocab_size, dtype=torch.bool)
        is_code[self.ids.code_start : self.ids.code_end] = True
        text = ~is_code
        text[[self.ids.mask, self.ids.pad, self.ids.image, self.ids.boi, self.ids.eoi]] = False
        text[len(tokenizer) :] = False
        self.allowed = {"text": text, "code": is_code}  # (vocab,) bool each

    # ----- construction -------------------------------------------------------------
    @classmethod
    def tiny(cls, seed: int = 0, codec: ImageCodec | None = None, **config: Any) -> ARPolicy:
        """A fresh small policy (~1.1M parameters, as DiffusionPolicy.tiny); ``config`` overrides model fields."""
        decoding = config.pop("decoding", None)

        def make_model(tokenizer: PreTrainedTokenizerBase, ids: SpecialIds) -> ARModel:
            values = dict(TINY_CONFIG, vocab_size=len(tokenizer), pad_token_id=ids.pad, eos_token_id=ids.eos,
                          bos_token_id=None, image_token_id=ids.image, tie_word_embeddings=False)  # fmt: skip
            values.update(config)
            if "num_attention_heads" in config and "num_key_value_heads" not in config:
                values["num_key_value_heads"] = config["num_attention_heads"]
            return ARModel(ARConfig(**values))

        model, tokenizer, codec = seeded_parts(seed, codec, make_model)
        return cls(model.eval(), tokenizer, codec, decoding, seed=seed)

    def decoding_settings(self) -> dict[str, Any]:
        """The decoding settings that apply to this policy, as a JSON-able dict (recorded with results)."""
        d = self.decoding
        return {"decoder": "autoregressive (generate, KV cache)", "gen_length": d.gen_length,
                "task_gen_length": dict(d.task_gen_length), "temperature": d.temperature}  # fmt: skip

    # ----- sampling ---------------------------------------------------------------------
    def rollout(
        self,
        observations: list[dict],
        num_samples: int = 1,
        forced: Sequence[str | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """Sample ``num_samples`` responses per observation (``forced`` must be all None)."""
        if any(s is not None for s in expand_forced(forced, len(observations), num_samples)):
            raise ValueError(
                "ARPolicy cannot force answer suffixes: answer forcing fixes the response's last tokens before the "
                "reasoning is written (inpainting), which needs a bidirectional model such as DiffusionPolicy; "
                "turn it off (answer_forcing: false, as configs/ar_grpo.yaml does)"
            )
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        tasks = [task_of(obs) for obs in observations]
        obs_of_row = [i for i in range(len(observations)) for _ in range(num_samples)]
        pixel_values = self.pixel_values(observations).to(self.device)[obs_of_row]
        prompts = [self.prompt_ids(obs) for obs in observations]
        batch = RowBatch(
            prompts=[prompts[i] for i in obs_of_row],
            layouts=[self.layout(tasks[i]) for i in obs_of_row],
            suffixes=[None] * len(obs_of_row),
        )
        responses: list[torch.Tensor | None] = [None] * len(obs_of_row)
        nfe = 0
        was_training = self.model.training
        self.model.eval()
        try:
            for layout, rows in batch.groups().items():
                prompt_ids, attention = batch.group_inputs(rows, self.ids)[:2]
                prompt_ids, attention = prompt_ids[:, 1:], attention[:, 1:]  # drop the row-tag column
                out, calls = self._generate_group(prompt_ids, attention, pixel_values[rows], layout, generator)
                nfe += calls
                for k, row in enumerate(rows):
                    responses[row] = out[k].cpu()
        finally:
            self.model.train(was_training)
        rollouts = assemble(batch, responses, [torch.zeros_like(r) for r in responses], self.ids)
        rollouts.unmask_step = None
        rollouts.response_mask = self.scored_mask(rollouts)
        rollouts.prompt_index = torch.tensor(obs_of_row, dtype=torch.long)
        for row, response in enumerate(responses):
            obs = observations[obs_of_row[row]]
            size = int(obs["image"].shape[0]) if hasattr(obs.get("image"), "shape") else self.codec.grid
            text, action = decode_response(response, batch.layouts[row], self.tokenizer, self.ids, self.codec, size)
            rollouts.texts.append(text)
            rollouts.actions.append(action)
        rollouts.pixel_values = pixel_values.cpu()
        rollouts.extras.update(task=[tasks[i] for i in obs_of_row], nfe=nfe)
        return rollouts

    def rollout_from(
        self,
        observations: list[dict],
        parents: Rollouts,
        step: int,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> Rollouts:
        """Not supported: an autoregressive rollout has no intermediate denoising state to branch from."""
        raise NotImplementedError(
            "ARPolicy cannot continue a rollout from an intermediate denoising state (tree search); "
            "set tree_search: [] in the config (configs/ar_grpo.yaml does)"
        )

    @torch.no_grad()
    def _generate_group(
        self,
        prompt_ids: torch.Tensor,
        attention: torch.Tensor,
        pixel_values: torch.Tensor,
        layout: ResponseLayout,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, int]:
        """Responses (n, layout.length) of left-padded prompts (n, P), and the model calls made."""
        device, eos = self.device, self.ids.eos
        prompt_ids, attention = prompt_ids.to(device), attention.to(device)
        embeds = self.model.embed_inputs(prompt_ids, pixel_values)
        text = self._decode(embeds, attention, "text", layout.text_length, generator)
        calls = text.shape[1]
        text = F.pad(text, (0, layout.text_length - text.shape[1]), value=eos)  # rows that stopped: <eos> padding
        if not layout.grid:
            return text, calls
        n = len(text)
        boi = torch.full((n, 1), self.ids.boi, dtype=torch.long, device=device)
        context = torch.cat([prompt_ids, text, boi], 1)
        attention = torch.cat([attention, torch.ones(n, text.shape[1] + 1, dtype=attention.dtype, device=device)], 1)
        embeds = self.model.embed_inputs(context, pixel_values)
        codes = self._decode(embeds, attention, "code", layout.grid**2, generator)
        eoi = torch.full((n, 1), self.ids.eoi, dtype=torch.long, device=device)
        return torch.cat([text, boi, codes, eoi], 1), calls + layout.grid**2

    def _decode(
        self, embeds: torch.Tensor, attention: torch.Tensor, kind: str, steps: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``model.generate`` from prompt embeddings: up to ``steps`` tokens of ``kind`` (text stops at <eos>)."""
        processors = LogitsProcessorList([AllowedTokens(self.allowed[kind])])
        if self.decoding.temperature > 0:
            processors.append(GumbelSampling(self.decoding.temperature, generator))
        config = GenerationConfig(
            max_new_tokens=steps, min_new_tokens=0 if kind == "text" else steps, do_sample=False, use_cache=True,
            eos_token_id=self.ids.eos if kind == "text" else None, pad_token_id=self.ids.eos, bos_token_id=None,
        )  # fmt: skip
        out = self.model.generate(  # synced_gpus: a sharded training step keeps every rank generating until all are done
            inputs_embeds=embeds, attention_mask=attention.long(), generation_config=config, logits_processor=processors,
            synced_gpus=active_sync() is not None,
        )  # fmt: skip
        return out[:, -steps:] if out.shape[1] > steps else out

    # ----- likelihood -----------------------------------------------------------------
    def scored_mask(self, rollouts: Rollouts) -> torch.Tensor:
        """(B, L) bool: the positions the model sampled (text up to the first <eos> inclusive, and codes)."""
        response = rollouts.response_mask.bool()
        forced = rollouts.forced_mask.bool() if rollouts.forced_mask is not None else torch.zeros_like(response)
        code = rollouts.extras.get("code_mask")
        code = code.bool().to(response.device) if code is not None else torch.zeros_like(response)
        text = response & ~forced & ~code
        eos = ((rollouts.sequences.to(response.device) == self.ids.eos) & text).long()
        after_eos = (eos.cumsum(1) - eos) > 0
        return response & ~forced & ~(text & after_eos)

    def token_log_probs(self, rollouts: Rollouts) -> torch.Tensor:
        """Exact log-probs (B, L) of the sampled tokens under the current model (0 elsewhere), with gradients."""
        device = self.device
        sequences = rollouts.sequences.to(device)
        attention = rollouts.attention_mask.to(device).long()
        pixel_values = None if rollouts.pixel_values is None else rollouts.pixel_values.to(device)
        logits = self.model(
            sequences, pixel_values=pixel_values, attention_mask=attention, position_ids=positions(attention)
        ).logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
        code = rollouts.extras.get("code_mask")
        code = torch.zeros_like(sequences, dtype=torch.bool) if code is None else code.to(device).bool()
        allowed = torch.where(code[:, 1:, None], self.allowed["code"].to(device), self.allowed["text"].to(device))
        logits = logits.masked_fill(~allowed, NEG_LOGIT)
        if self.decoding.temperature > 0:
            logits = logits / self.decoding.temperature
        picked = torch.log_softmax(logits, -1).gather(-1, sequences[:, 1:, None]).squeeze(-1)  # (B, L-1)
        scored = self.scored_mask(rollouts).to(device)[:, 1:]
        picked = torch.where(scored, picked, torch.zeros_like(picked))
        return F.pad(picked, (1, 0))

    def log_likelihood(
        self, rollouts: Rollouts, estimator: str | None = None, mask_seed: int = 0, num_samples: int = 1,
        prompt_mask_prob: float = 0.0,
    ) -> torch.Tensor:
        """Exact log p(response | prompt) per row (B,), with gradients (the estimator arguments are ignored)."""
        return self.token_log_probs(rollouts).sum(-1)

    def log_likelihood_terms(
        self, rollouts: Rollouts, estimator: str | None = None, mask_seed: int = 0, num_samples: int = 1,
        prompt_mask_prob: float = 0.0,
    ) -> LikelihoodEstimate:
        """The exact likelihood in DiffusionPolicy.log_likelihood_terms's form: loglik (B,), token_logp (B, L)."""
        token_logp = self.token_log_probs(rollouts)
        scored = self.scored_mask(rollouts).to(token_logp.device).long()
        return LikelihoodEstimate(loglik=token_logp.sum(-1), token_logp=token_logp, scored_count=scored, num_forward=1)

    def sft_loss(self, observations: list[dict], targets: list[str | dict]) -> torch.Tensor:
        """Next-token cross-entropy of the reference ``targets`` (mean over the batch's scored tokens)."""
        from agents.sft import build_sft_batch

        batch = build_sft_batch(self, observations, targets)
        tokens = self.scored_mask(batch).sum().clamp(min=1)
        return -self.token_log_probs(batch).sum() / tokens.to(self.device)

    # ----- persistence ----------------------------------------------------------------
    def save_pretrained(self, path: str) -> None:
        """Write model, tokenizer and ``policy_config.json`` (format, decoding, codec, seed) to ``path``."""
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {"format": FORMAT, "version": 1, "decoding": asdict(self.decoding), "codec": self.codec.to_dict(),
                "seed": self.seed}  # fmt: skip
        with open(os.path.join(path, POLICY_CONFIG), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, **decoding_overrides: Any) -> ARPolicy:
        """Rebuild a policy written by :meth:`save_pretrained` (``decoding_overrides``: e.g. ``temperature=0``)."""
        meta, decoding = read_policy_meta(path, "ARPolicy", FORMAT, decoding_overrides)
        model = ARModel.from_pretrained(path)
        if device is not None:
            model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model.eval(), tokenizer, codec_from_dict(meta["codec"]), decoding, seed=int(meta.get("seed", 0)))
