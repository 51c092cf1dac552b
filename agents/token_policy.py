"""``TokenPolicy``: what the diffusion and autoregressive agents share over env observations.

Both :class:`agents.DiffusionPolicy` and :class:`agents.autoregressive.ARPolicy` subclass it:

* parts: ``model`` (an ``nn.Module`` whose config has ``vocab_size``, ``num_patches``,
  ``image_size`` and ``<name>_token_id`` fields), ``tokenizer`` (built by
  :func:`agents.diffusion.tokenizer.build_tokenizer`), ``codec``, ``decoding`` (a
  :class:`agents.diffusion.policy.DecodingConfig`), ``seed`` and ``ids``
  (:class:`agents.diffusion.tokenizer.SpecialIds`), checked to agree by :meth:`TokenPolicy._setup`;
* inputs: :meth:`prompt_ids` (``num_patches`` ``<image>`` placeholders then the prompt's
  tokens, cached), :meth:`layout` (:class:`agents.diffusion.layout.ResponseLayout` per
  task), :meth:`pixel_values`, :meth:`suffix_ids`;
* :meth:`act` (seeded by ``seed``) and :meth:`sft_rollouts` (reference solutions as
  rollouts, :func:`agents.sft.build_sft_batch`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from agents.diffusion.codec import ImageCodec, PaletteCodec
from agents.diffusion.layout import IMAGE_TASKS, ResponseLayout, image_tensor
from agents.diffusion.tokenizer import special_ids
from agents.policy import Rollouts

__all__ = ["TokenPolicy"]


class TokenPolicy:
    """Observation -> token plumbing shared by the diffusion and autoregressive agents."""

    #: answer forcing (``rollout(..., forced=...)``) and tree search (``rollout_from``) support
    supports_forcing: bool = True
    supports_tree_search: bool = True

    def _setup(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        codec: ImageCodec | None,
        decoding: Any,
        seed: int,
        token_fields: tuple[str, ...],
    ) -> None:
        """Store the parts and check tokenizer, codec and model config agree."""
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec if codec is not None else PaletteCodec()
        self.decoding = decoding.validate()
        self.seed = int(seed)
        self.ids = special_ids(tokenizer)
        self._prompt_cache: dict[str, list[int]] = {}
        if self.ids.codebook_size != self.codec.codebook_size:
            raise ValueError(
                f"tokenizer has {self.ids.codebook_size} image-code tokens but the codec's codebook has "
                f"{self.codec.codebook_size}; build the tokenizer with build_tokenizer(codec.codebook_size)"
            )
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"model vocab_size {model.config.vocab_size} < tokenizer size {len(tokenizer)}")
        for name in token_fields:
            value, config_value = getattr(self.ids, name), getattr(model.config, f"{name}_token_id")
            if config_value != value:
                raise ValueError(f"model config {name}_token_id={config_value} but the tokenizer's is {value}")

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        return next(self.model.parameters()).device

    # ----- inputs -------------------------------------------------------------------
    def prompt_ids(self, observation: dict) -> list[int]:
        """The prompt's token ids (:meth:`encode_prompt` of its text, cached per text)."""
        text = observation.get("prompt", "")
        if not isinstance(text, str):
            raise ValueError(f"observation 'prompt' must be a str, got {type(text).__name__}")
        if text not in self._prompt_cache:
            if len(self._prompt_cache) >= 4096:
                self._prompt_cache.clear()
            self._prompt_cache[text] = list(self.encode_prompt(text))
        return list(self._prompt_cache[text])

    def encode_prompt(self, text: str) -> list[int]:
        """Image placeholders then the prompt text's token ids (subclasses change the layout here)."""
        tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [self.ids.image] * self.model.config.num_patches + list(tokens)

    def layout(self, task: str) -> ResponseLayout:
        """The response layout for ``task``."""
        grid = self.codec.grid if task in IMAGE_TASKS else 0
        return ResponseLayout(self.decoding.text_length(task), grid)

    def pixel_values(self, observations: list[dict]) -> torch.Tensor:
        """(N, 3, S, S) float images at the model's image size (:func:`agents.diffusion.layout.image_tensor`)."""
        size = self.model.config.image_size
        if not observations:
            return torch.zeros(0, 3, size, size)
        return torch.stack([image_tensor(obs["image"], size) for obs in observations])

    def suffix_ids(self, suffix: str | None) -> list[int] | None:
        """Token ids of a forced text suffix."""
        return None if suffix is None else self.text_ids(suffix)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of response text; a special token's text in it (a literal ``<mask>``) is spelled in ordinary
        tokens, never the special id (a response position never holds the mask id, and every one is scored)."""
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    # ----- acting and SFT rows ------------------------------------------------------------
    def act(self, observations: list[dict], num_samples: int = 1) -> list[list[Any]]:
        """``num_samples`` env actions per observation (seeded by the policy's seed)."""
        generator = torch.Generator().manual_seed(self.seed)
        actions = self.rollout(observations, num_samples, generator=generator).actions  # type: ignore[attr-defined]
        return [actions[i * num_samples : (i + 1) * num_samples] for i in range(len(observations))]

    def sft_rollouts(self, observations: list[dict], targets: list[str | dict]) -> Rollouts:
        """Rollouts whose responses are the reference ``targets`` (:func:`agents.sft.build_sft_batch`)."""
        from agents.sft import build_sft_batch

        return build_sft_batch(self, observations, targets)  # type: ignore[arg-type]
