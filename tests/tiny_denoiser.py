"""Tiny seeded denoisers for the sampler and likelihood tests (no dependency on agents.diffusion.model).

``TinyDenoiser``: embedding + one bidirectional attention layer; positions count only attended
tokens, so a left-padded row gives the same logits as the same row without padding.
``ContextFree``: logits depend only on the position (a learnable per-position table), so the
exact log-likelihood of a sequence is the sum of per-position log-softmax values.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 24
MASK_ID = 23


class TinyDenoiser(nn.Module):
    """Embedding + one bidirectional self-attention block; ``logit_scale`` sharpens predictions."""

    def __init__(self, vocab: int = VOCAB, dim: int = 32, max_len: int = 96, seed: int = 0, logit_scale: float = 1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        self.logit_scale = logit_scale

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(ids, dtype=torch.bool)
        positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        h = self.embed(ids) + self.pos(positions)  # (B, L, D)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask[:, None, :])
        h = h + self.mlp(self.norm(h))
        return self.head(self.norm(h)) * self.logit_scale  # (B, L, V)


class ContextFree(nn.Module):
    """Logits (B, L, V) = a per-position table, whatever the input tokens are."""

    def __init__(self, length: int, vocab: int = VOCAB, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(length, vocab, generator=gen))

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.table[: ids.shape[1]].unsqueeze(0).expand(ids.shape[0], -1, -1)

    def exact_loglik(self, ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """Exact sum of response-token log-probs (B,)."""
        logp = torch.log_softmax(self.table[: ids.shape[1]], dim=-1)  # (L, V)
        token = logp.gather(1, ids.T).T  # (B, L)
        return (token * response_mask).sum(1)


class CallCounter:
    """Wraps a model_fn and counts its calls and the rows it saw."""

    def __init__(self, model: nn.Module):
        self.model, self.calls, self.rows = model, 0, 0

    def __call__(self, ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        self.rows += ids.shape[0]
        return self.model(ids, attention_mask)
