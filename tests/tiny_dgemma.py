"""A tiny random DiffusionGemma folder built offline from its config classes (tests; no downloads).

:func:`save_tiny_dgemma` writes a ``DiffusionGemmaForBlockDiffusion`` (text: hidden 64, 2 layers -- one
sliding, one full --, 2 experts; a one-layer Gemma-4 vision tower), the byte-level BPE tokenizer of
:mod:`tiny_hf` with ``<boi>``/``<eoi>`` added, and a Gemma-4 PIL image processor (70 soft tokens at
most: 64 for a square image) to ``path``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tiny_hf import build_tokenizer


def tiny_dgemma_config(tok, canvas_length: int = 16, sliding_window: int = 512, hidden_size: int = 64, layers: int = 2):
    """The DiffusionGemmaConfig of the tiny model for tokenizer ``tok`` (``hidden_size``/``layers``: a larger one, benches)."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaTextConfig
    from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, global_head_dim=32, num_experts=2, top_k_experts=1, moe_intermediate_size=hidden_size,
        sliding_window=sliding_window, max_position_embeddings=2048, layer_types=["sliding_attention", "full_attention"] * (layers // 2) + ["full_attention"] * (layers % 2),
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    vision = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=8, patch_size=16, pooling_kernel_size=3,
                                position_embedding_size=64)  # fmt: skip
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, boi_token_id=tok.convert_tokens_to_ids("<boi>"),
                                eoi_token_id=tok.convert_tokens_to_ids("<eoi>"), image_token_id=tok.convert_tokens_to_ids("<image>"),
                                canvas_length=canvas_length)  # fmt: skip


def save_tiny_dgemma(path: str | Path, seed: int = 0, canvas_length: int = 16, sliding_window: int = 512,
                     hidden_size: int = 64, layers: int = 2) -> Path:
    """A tiny random DiffusionGemma + tokenizer + image processor saved to ``path`` (module docstring)."""
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<boi>", "<eoi>"]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffusionGemmaForBlockDiffusion(tiny_dgemma_config(tok, canvas_length, sliding_window, hidden_size, layers))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    Gemma4ImageProcessorPil(max_soft_tokens=70, patch_size=16, pooling_kernel_size=3).save_pretrained(path)
    return Path(path)
