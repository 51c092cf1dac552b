"""A tiny unified masked-diffusion transformer (HF ``PreTrainedModel``), LLaDA/LaViDa-style.

Contract: ``DiffusionModel(config)(input_ids (B, L), pixel_values (B, 3, H, W) | None,
attention_mask (B, L) | None) -> MaskedLMOutput(logits (B, L, vocab))``.

* Bidirectional attention (no causal mask); ``attention_mask`` 0 marks padding keys.
  Positions count only attended tokens (``cumsum(attention_mask) - 1``), so left padding
  does not change a row's outputs.
* Understanding path (LLaVA-style): the prompt holds ``num_patches`` copies of the
  ``image_token_id`` placeholder; their embeddings are replaced, in order, by the patch
  embeddings (conv patch-embed + learned patch positions) of ``pixel_values``
  (floats; the policy passes ``1 - image / 255``, background 0).
* Generation path: generated images are ordinary image-code tokens of the vocabulary.
* With ``labels`` (-100 = ignore), ``loss`` is the mean cross-entropy on the rest.

``import agents.diffusion.model`` registers ``model_type="lavida_diffusion"`` with
``AutoConfig``, ``AutoModel`` and ``AutoModelForMaskedLM``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

__all__ = ["DiffusionConfig", "DiffusionModel"]


class DiffusionConfig(PretrainedConfig):
    """Size and special ids of the masked-diffusion transformer (defaults: ~1M parameters)."""

    model_type = "lavida_diffusion"

    def __init__(
        self,
        vocab_size: int = 512,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        max_position_embeddings: int = 1024,
        image_size: int = 128,
        patch_size: int = 16,
        num_channels: int = 3,
        image_token_id: int = 4,
        mask_token_id: int = 2,
        pad_token_id: int = 0,
        eos_token_id: int = 1,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        **kwargs,
    ) -> None:
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.max_position_embeddings = max_position_embeddings
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.image_token_id = image_token_id
        self.mask_token_id = mask_token_id
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)

    @property
    def num_patches(self) -> int:
        """Image placeholder tokens per observed image: ``(image_size // patch_size) ** 2``."""
        return (self.image_size // self.patch_size) ** 2


class Block(nn.Module):
    """Pre-LN transformer block with bidirectional multi-head attention."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_ratio * d), nn.GELU(), nn.Linear(config.mlp_ratio * d, d)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, cached: torch.Tensor | None = None, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(output, k, v)`` for hidden states ``x`` (batch, n, hidden); ``k``, ``v`` (batch, heads, n, head_dim).

        With ``cached`` (batch, 2, heads, L, head_dim), ``x`` holds positions ``start .. start+n-1``
        of a length-L sequence and attends to their fresh keys/values spliced into the cached ones.
        """
        b, n, d = x.shape  # (batch, seq, hidden)
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, seq, head_dim)
        fresh_k, fresh_v = k, v
        if cached is not None:
            ck, cv = cached[:, 0], cached[:, 1]
            k = torch.cat([ck[:, :, :start], k, ck[:, :, start + n :]], 2)
            v = torch.cat([cv[:, :, :start], v, cv[:, :, start + n :]], 2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.dropout(self.mlp(self.norm2(x))), fresh_k, fresh_v


class DiffusionModel(PreTrainedModel):
    """Bidirectional transformer over text and image-code tokens with a patch image encoder."""

    config_class = DiffusionConfig
    base_model_prefix = "lavida_diffusion"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, d)
        self.patch_embed = nn.Conv2d(config.num_channels, d, config.patch_size, stride=config.patch_size)
        self.patch_positions = nn.Parameter(torch.zeros(1, config.num_patches, d))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, DiffusionModel):
            nn.init.normal_(module.patch_positions, std=std)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch embeddings (batch, num_patches, hidden) of images (batch, 3, H, W)."""
        size = self.config.image_size
        if pixel_values.shape[1:] != (self.config.num_channels, size, size):
            raise ValueError(
                f"pixel_values must be (batch, {self.config.num_channels}, {size}, {size}), "
                f"got {tuple(pixel_values.shape)}; resize images to config.image_size"
            )
        patches = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))  # (B, d, g, g)
        return patches.flatten(2).transpose(1, 2) + self.patch_positions

    def _embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (batch, seq, hidden) with image placeholders replaced by patch embeddings."""
        x = self.embed_tokens(input_ids)  # (batch, seq, hidden)
        is_image = input_ids == self.config.image_token_id
        if pixel_values is not None:
            counts = is_image.sum(1)
            if bool((counts != self.config.num_patches).any()):
                raise ValueError(
                    f"each row needs exactly {self.config.num_patches} image placeholder tokens "
                    f"(id {self.config.image_token_id}) when pixel_values is given; got {counts.tolist()}"
                )
            x = x.masked_scatter(is_image[..., None], self.encode_image(pixel_values).to(x.dtype))
        elif bool(is_image.any()):
            raise ValueError("input_ids hold image placeholder tokens but pixel_values is None")
        return x

    def _positions(self, b: int, n: int, attention_mask: torch.Tensor | None, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position ids (batch, seq) counting attended tokens only, and the key mask (batch, 1, 1, seq)."""
        if attention_mask is None:
            positions, key_mask = torch.arange(n, device=device).expand(b, n), None
        else:
            attention_mask = attention_mask.to(torch.long)
            positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
            key_mask = attention_mask.bool()[:, None, None, :]
        if int(positions.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} tokens exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}; shorten gen_length or raise the config value"
            )
        return positions, key_mask

    def _run(self, x: torch.Tensor, key_mask, cache: torch.Tensor | None = None, start: int = 0):
        """Logits and, without ``cache``, the stacked keys/values (batch, layers, 2, heads, n, head_dim) of every block."""
        kvs = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, key_mask, None if cache is None else cache[:, i], start)
            if cache is None:  # a window's fresh keys/values are not kept
                kvs.append(torch.stack([k, v], 1))
        return self.lm_head(self.norm(x)), torch.stack(kvs, 1) if kvs else None

    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Logits (batch, seq, vocab) for every position of ``input_ids``."""
        b, n = input_ids.shape
        positions, key_mask = self._positions(b, n, attention_mask, input_ids.device)
        x = self._embed(input_ids, pixel_values) + self.embed_positions(positions)
        for block in self.blocks:
            x = block(x, key_mask)[0]
        logits = self.lm_head(self.norm(x))  # (batch, seq, vocab)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def encode_with_cache(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, L, V), cache (B, layers, 2, heads, L, head_dim))``: a full forward that keeps every key/value."""
        b, n = input_ids.shape
        positions, key_mask = self._positions(b, n, attention_mask, input_ids.device)
        return self._run(self._embed(input_ids, pixel_values) + self.embed_positions(positions), key_mask)

    @torch.no_grad()
    def forward_window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, start: int, end: int, cache: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, end-start, V) of positions ``start:end`` of ``input_ids`` (B, L), every other position's keys/values
        taken from ``cache`` (from :meth:`encode_with_cache` on the same rows); the window may not hold image placeholders."""
        b, n = input_ids.shape
        positions, key_mask = self._positions(b, n, attention_mask, input_ids.device)
        window = input_ids[:, start:end]
        if bool((window == self.config.image_token_id).any()):
            raise ValueError("a cached window may not hold image placeholder tokens; start it after the prompt")
        x = self.embed_tokens(window) + self.embed_positions(positions[:, start:end])
        return self._run(x, key_mask, cache, start)[0]


AutoConfig.register(DiffusionConfig.model_type, DiffusionConfig, exist_ok=True)
AutoModel.register(DiffusionConfig, DiffusionModel, exist_ok=True)
AutoModelForMaskedLM.register(DiffusionConfig, DiffusionModel, exist_ok=True)
