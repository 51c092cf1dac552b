"""The autoregressive agent's network: a Llama causal LM with the diffusion model's patch image input.

Contract:

* :class:`ARConfig` -- a ``LlamaConfig`` (``model_type="lavida_ar"``) plus the image fields of
  :class:`agents.diffusion.model.DiffusionConfig`: ``image_size``, ``patch_size``,
  ``num_channels``, ``image_token_id``.
* :class:`ARModel` -- ``LlamaForCausalLM`` plus the same image encoder as ``DiffusionModel``
  (conv patch-embed + learned patch positions; ``encode_image`` is that class's method, not a
  copy). ``embed_inputs(input_ids (B, L), pixel_values (B, 3, S, S) | None) -> (B, L, hidden)``
  replaces the ``num_patches`` ``<image>`` placeholders of each row, in order, by the patch
  embeddings: the prompt's image prefix. ``forward(input_ids, pixel_values=..., ...)`` does
  that and runs the causal LM; generation passes the embeddings as ``inputs_embeds`` to
  ``generate`` (KV cache), so later steps embed only the new tokens.
* Positions count only attended tokens (``cumsum(attention_mask) - 1``, 0 on padding), the
  rule ``generate`` applies to left-padded batches; :func:`positions` gives it for full passes.
* Logits processors for ``generate``: :class:`AllowedTokens` (a position may only hold the
  tokens of a boolean vocabulary mask; others get ``NEG_LOGIT``) and :class:`GumbelSampling`
  (``logits / T + Gumbel noise`` from a seeded ``torch.Generator``, so a greedy ``generate``
  draws exactly from ``softmax(logits / T)`` and is reproducible).

``import agents.autoregressive.model`` registers ``lavida_ar`` with ``AutoConfig`` and ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LogitsProcessor

from agents.diffusion.model import DiffusionModel
from agents.diffusion.rows import NEG_LOGIT

__all__ = ["ARConfig", "ARModel", "AllowedTokens", "GumbelSampling", "positions"]


@strict
class ARConfig(LlamaConfig):
    """A Llama config with the observed-image fields of the diffusion model's config."""

    model_type = "lavida_ar"

    image_size: int = 128
    patch_size: int = 16
    num_channels: int = 3
    image_token_id: int = 4

    def validate_architecture(self) -> None:
        """Llama's checks plus image size / patch size compatibility."""
        super().validate_architecture()
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        """Image placeholder tokens per observed image: ``(image_size // patch_size) ** 2``."""
        return (self.image_size // self.patch_size) ** 2


class ARModel(LlamaForCausalLM):
    """Causal LM over text and image-code tokens whose prompt starts with patch embeddings of the image."""

    config_class = ARConfig
    config: ARConfig

    def __init__(self, config: ARConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.patch_embed = nn.Conv2d(config.num_channels, d, config.patch_size, stride=config.patch_size)
        # drawn here: LlamaForCausalLM.__init__ already ran post_init on this module itself
        self.patch_positions = nn.Parameter(torch.randn(1, config.num_patches, d) * config.initializer_range)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    #: the diffusion model's image encoder: (batch, 3, S, S) -> (batch, num_patches, hidden)
    encode_image = DiffusionModel.encode_image

    def embed_inputs(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (batch, seq, hidden) with each row's ``<image>`` placeholders replaced by patches."""
        x = self.get_input_embeddings()(input_ids)
        is_image = input_ids == self.config.image_token_id
        if pixel_values is None:
            if bool(is_image.any()):
                raise ValueError("input_ids hold image placeholder tokens but pixel_values is None")
            return x
        counts = is_image.sum(1)
        if bool((counts != self.config.num_patches).any()):
            raise ValueError(
                f"each row needs exactly {self.config.num_patches} image placeholder tokens "
                f"(id {self.config.image_token_id}) when pixel_values is given; got {counts.tolist()}"
            )
        return x.masked_scatter(is_image[..., None], self.encode_image(pixel_values).to(x.dtype))

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None, **kwargs):
        """``LlamaForCausalLM.forward``; with ``pixel_values``, the image placeholders become patch embeddings."""
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values needs input_ids holding the <image> placeholders")
            kwargs["inputs_embeds"] = self.embed_inputs(input_ids, pixel_values)
            input_ids = None
        return super().forward(input_ids=input_ids, **kwargs)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) counting attended tokens only (0 on padding), as ``generate`` does."""
    attention_mask = attention_mask.long()
    return (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


class AllowedTokens(LogitsProcessor):
    """Give every token outside ``allowed`` (vocab,) bool the logit ``NEG_LOGIT``."""

    def __init__(self, allowed: torch.Tensor) -> None:
        self.allowed = allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = self.allowed.to(scores.device)[: scores.shape[-1]]
        return scores.masked_fill(~allowed, NEG_LOGIT)


class GumbelSampling(LogitsProcessor):
    """``scores / temperature + Gumbel(0, 1)`` noise from ``generator``: argmax = one categorical draw."""

    def __init__(self, temperature: float, generator: torch.Generator | None) -> None:
        if not temperature > 0:
            raise ValueError(f"GumbelSampling needs temperature > 0, got {temperature}")
        self.temperature = float(temperature)
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        u = torch.rand(scores.shape, generator=self.generator, device=device, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-12)))
        return scores.float() / self.temperature + gumbel.to(scores.device, torch.float32)


AutoConfig.register(ARConfig.model_type, ARConfig, exist_ok=True)
AutoModelForCausalLM.register(ARConfig, ARModel, exist_ok=True)
