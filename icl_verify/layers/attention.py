"""Multi-head causal softmax self-attention, with optional rotary positions."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer


def rotary(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of ``x`` with shape ``(B, H, T, dh)`` (``dh`` even); position
    ``t`` is rotated by the angles ``(offset + t) * base^(-2j/dh)``."""
    dh = x.shape[-1]
    t = torch.arange(offset, offset + x.shape[-2], dtype=x.dtype, device=x.device)
    freq = base ** (-torch.arange(0, dh, 2, dtype=x.dtype, device=x.device) / dh)
    angle = t[:, None] * freq[None, :]
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


def causal_mask(t: int, device, window: int | None = None) -> torch.Tensor:
    """``(T, T)`` boolean mask, True where query ``i`` may attend key ``j``: ``j <= i`` (and
    ``i - j < window`` when a window is given)."""
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    mask = j <= i
    if window is not None:
        mask = mask & (i - j < window)
    return mask


class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention ``(B, T, d) -> (B, T, d)``.

    ``A(X)_t = W_o concat_h sum_{j<=t} softmax_j(q_t . k_j / sqrt(dh)) v_j``, optionally with
    rotary positions on ``q`` and ``k`` and an optional sliding window of ``window`` keys.
    """

    def __init__(self, d: int, heads: int = 1, *, rope: bool = False, window: int | None = None,
                 bias: bool = False):
        super().__init__()
        if d % heads:
            raise ValueError(f"d={d} is not divisible by heads={heads}")
        self.d, self.heads, self.rope, self.window = d, heads, rope, window
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.out = nn.Linear(d, d, bias=bias)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys, values ``(B, H, T, dh)`` of the tokens ``x`` (rotary not applied)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        shape = (b, t, self.heads, self.d // self.heads)
        return tuple(y.reshape(shape).transpose(1, 2) for y in (q, k, v))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores ``(B, H, T, T)`` (masked entries are ``-inf``)."""
        q, k, _ = self.split(x)
        if self.rope:
            q, k = rotary(q), rotary(k)
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return s.masked_fill(~causal_mask(x.shape[1], x.device, self.window), float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        _, _, v = self.split(x)
        p = torch.softmax(self.scores(x), dim=-1)
        y = (p @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)

    def states(self, x: torch.Tensor, *, output: bool = True):
        """Per-prefix cache of a context ``x`` ``(B, n, d)``: its keys (rotated at positions
        ``0..n-1``) and values, each ``(B, H, n, dh)``; with ``output`` also ``A(x)`` ``(B, n, d)``.
        Returns ``(A(x) or None, (keys, values))``."""
        q, k, v = self.split(x)
        if self.rope:
            q, k = rotary(q), rotary(k)
        if not output:
            return None, (k, v)
        # the same attention as forward, by the fused kernel (skips the masked half)
        mask = None if self.window is None else causal_mask(x.shape[1], x.device, self.window)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.out(y.transpose(1, 2).reshape(x.shape)), (k, v)

    def step(self, cache, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, n+1, d)`` for the copies ``x`` ``(B, n+1, d)``: copy ``i`` sits at
        position ``i`` after the first ``i`` cached tokens (window applied), in one batched pass
        of the same cost as a causal forward."""
        keys, values = cache
        b, t, d = x.shape
        q, k, v = self.split(x)
        if self.rope:
            q, k = rotary(q), rotary(k)
        q = q / math.sqrt(q.shape[-1])
        # Score matrix (n+1, n+1): copy i reads context keys j < i, and its own key on the
        # diagonal (where the context key i, unseen by copy i, would be).
        pad = lambda c: torch.cat([c, c.new_zeros(*c.shape[:-2], 1, c.shape[-1])], dim=-2)  # noqa: E731
        keys, values = pad(keys), pad(values)
        i = torch.arange(t, device=x.device)[:, None]
        j = torch.arange(t, device=x.device)[None, :]
        unseen = j >= i
        if self.window is not None:
            unseen = unseen | (i - j >= self.window)
        scores = (q @ keys.transpose(-1, -2)).masked_fill_(unseen, float("-inf"))
        scores.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))
        p = torch.softmax(scores, dim=-1)
        own = p.diagonal(dim1=-2, dim2=-1)[..., None]  # (B, H, n+1, 1)
        y = p @ values + own * (v - values)  # swaps context value i for the copy's own value
        return self.out(y.transpose(1, 2).reshape(b, t, d))


@register_layer("softmax_attention", heads=(1, 2, 4), dim_multiple=1, dims=(2, 32),
                vanishing_increments=True, tags=("attention",))
def softmax_attention(d: int, *, heads: int) -> nn.Module:
    return SoftmaxAttention(d, heads)


# Rotary positions move every old score when the query moves one position further, so the
# O(1/i) argument of docs/theory.md §3 does not apply: unproven, and none found to grow (None).
@register_layer("softmax_attention_rope", heads=(1, 2), dim_multiple=2, dims=(2, 32),
                vanishing_increments=None, tags=("attention", "rotary"))
def softmax_attention_rope(d: int, *, heads: int) -> nn.Module:
    return SoftmaxAttention(d, heads, rope=True)
