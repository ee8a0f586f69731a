"""The attention variants of current models, as options of
:class:`~icl_verify.layers.attention.SoftmaxAttention`: grouped-query and multi-query attention,
a sliding window, ALiBi, and multi-head latent attention (DeepSeek-V2)."""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_layer
from .attention import SoftmaxAttention


class LatentAttention(SoftmaxAttention):
    """Multi-head latent attention ``(B, T, d) -> (B, T, d)``: keys and values are expanded from
    one compressed latent per token, ``c_t = W_c x_t`` (``r`` wide), ``k_t = W_uk c_t``,
    ``v_t = W_uv c_t``; queries ``q_t = W_q x_t``; then softmax attention over the heads. Without
    DeepSeek's decoupled rotary key and latent norms."""

    def __init__(self, d: int, heads: int = 1, *, latent: int | None = None):
        super().__init__(d, heads)
        self.latent = max(1, d // 2) if latent is None else latent
        self.qkv = nn.Linear(d, d + self.latent, bias=False)  # queries and the latent
        self.up = nn.Linear(self.latent, 2 * d, bias=False)  # keys and values from the latent

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, c = self.qkv(x).split([self.d, self.latent], dim=-1)
        return q, *self.up(c).chunk(2, dim=-1)


WINDOW = 4

# Position-free softmax attention whose heads share keys and values is still, per query head, a
# convex combination of values with scores that ignore positions: the O(1/i) argument of
# properties/test_vanishing.py applies head by head unchanged (True, and the suite checks it).


@register_layer("grouped_query_attention", heads=(2, 4), dims=(2, 32), vanishing_increments=True,
                tags=("attention", "grouped"))
def grouped_query_attention(d: int, *, heads: int) -> nn.Module:
    """Two query heads per key/value head."""
    return SoftmaxAttention(d, heads, kv_heads=heads // 2)


@register_layer("multi_query_attention", heads=(2, 4), dims=(2, 32), vanishing_increments=True,
                tags=("attention", "grouped"))
def multi_query_attention(d: int, *, heads: int) -> nn.Module:
    """One key/value head shared by every query head."""
    return SoftmaxAttention(d, heads, kv_heads=1)


@register_layer("latent_attention", heads=(1, 2, 4), dims=(2, 32), vanishing_increments=True,
                tags=("attention", "latent"))
def latent_attention(d: int, *, heads: int) -> nn.Module:
    """Keys and values from a latent of width ``max(1, d // 2)``."""
    return LatentAttention(d, heads)


# Once the window is full every new token evicts a key: the newest keys keep an O(1) share.
@register_layer("sliding_window_attention", heads=(1, 2), dims=(2, 32), vanishing_increments=False,
                tags=("attention", "local"))
def sliding_window_attention(d: int, *, heads: int) -> nn.Module:
    """Attention over the last ``WINDOW`` keys, no positions."""
    return SoftmaxAttention(d, heads, window=WINDOW)


# The bias -m_h (t - j) decays a key's weight geometrically with its distance from the query, so
# the newest keys keep an O(1) share: no O(1/i) bound.
@register_layer("alibi_attention", heads=(1, 2, 4), dims=(2, 32), vanishing_increments=False,
                tags=("attention", "alibi"))
def alibi_attention(d: int, *, heads: int) -> nn.Module:
    return SoftmaxAttention(d, heads, alibi=True)
