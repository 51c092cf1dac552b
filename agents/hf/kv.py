"""KV-cache plumbing for HF causal LMs run bidirectionally (A2D): one stacked tensor per forward, a window's cache.

The sampler's cache (:class:`agents.diffusion.sampler.CachingModelFn`) is one tensor with the batch
first. :func:`stack_cache` turns the transformers cache of a full forward into ``(B, layers, 2,
kv_heads, L, head_dim)`` (keys then values, RoPE already applied at each key's position);
:func:`window_cache` builds a fresh ``DynamicCache`` holding every position outside a window
``[start, end)`` -- the prefix, then the suffix -- so a forward of the window tokens (with their own
position ids and a mask over ``past + window`` keys) attends to all other positions. Attention is
permutation-invariant over keys once RoPE is applied, so the suffix may sit before the window.
Works with the transformers cache API of 4.45+ (``key_cache`` lists) and 5.x (``layers[i].keys``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["additive_mask", "cache_kwarg", "stack_cache", "window_cache"]


def cache_kwarg(backbone: nn.Module) -> str:
    """The forward keyword that takes a cache: ``cache`` (transformers >= 5.x renamed it) or ``past_key_values``."""
    base = backbone.get_base_model() if callable(getattr(backbone, "get_base_model", None)) else backbone  # peft
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(keys, values)]`` per layer, each (B, kv_heads, L, head_dim), of a transformers cache or legacy tuple."""
    if hasattr(cache, "layers"):  # transformers 5.x
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # transformers 4.4x-4.5x
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v, *_ in cache]


def stack_cache(cache: Any, length: int) -> torch.Tensor:
    """Every layer's keys/values as one (B, layers, 2, kv_heads, ``length``, head_dim) tensor."""
    if cache is None:
        raise ValueError("the backbone returned no KV cache (use_cache=True gave none); decode with cache='none'")
    layers = _layers(cache)
    short = [i for i, (k, _) in enumerate(layers) if k is None or k.shape[-2] != length]
    if not layers or short:
        raise ValueError(
            f"the backbone's KV cache does not hold all {length} positions in layer(s) {short} (sliding-window or "
            "shared-KV layers); decode this model with cache='none'"
        )
    return torch.stack([torch.stack([k, v], 1) for k, v in layers], 1)


def window_cache(stacked: torch.Tensor, start: int, end: int) -> Any:
    """A ``DynamicCache`` with the keys/values of positions ``[0, start)`` then ``[end, L)`` of ``stacked``."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i in range(stacked.shape[1]):
        kv = stacked[:, i]  # (B, 2, H, L, D)
        past = kv[..., :start, :] if end >= kv.shape[-2] else torch.cat([kv[..., :start, :], kv[..., end:, :]], -2)
        cache.update(past[:, 0], past[:, 1], i)
    return cache


def additive_mask(keys: torch.Tensor, queries: int, dtype: torch.dtype) -> torch.Tensor:
    """A (B, 1, ``queries``, K) additive mask: 0 where ``keys`` (B, K) is True, the dtype's minimum elsewhere."""
    mask = torch.zeros(keys.shape[0], 1, 1, keys.shape[1], dtype=dtype, device=keys.device)
    mask = mask.masked_fill(~keys.bool()[:, None, None, :], torch.finfo(dtype).min)
    return mask.expand(-1, -1, queries, -1)
