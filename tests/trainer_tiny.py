"""A tiny DiffusionPolicy factory for the trainer tests (``policy: tests/trainer_tiny.py:tiny_policy``)."""

from __future__ import annotations

from agents.diffusion.codec import PaletteCodec
from agents.diffusion.policy import DecodingConfig, DiffusionPolicy


def tiny_policy(seed: int = 0) -> DiffusionPolicy:
    """~20k-parameter policy: 1 layer of width 32, 4 image patches, a 4x4 code grid."""
    return DiffusionPolicy.tiny(
        seed=seed, codec=PaletteCodec(grid=4, image_size=32), decoding=DecodingConfig(),
        hidden_size=32, num_layers=1, num_heads=2, image_size=32, patch_size=16,
    )  # fmt: skip
