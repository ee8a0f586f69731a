"""Multi-head causal softmax self-attention, with optional rotary positions."""
from __future__ import annotations

import math

import torch
from torch import nn

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


@register_layer("softmax_attention", heads=(1, 2, 4), dim_multiple=1, dims=(2, 32),
                vanishing_increments=True, tags=("attention",))
def softmax_attention(d: int, *, heads: int) -> nn.Module:
    return SoftmaxAttention(d, heads)


@register_layer("softmax_attention_rope", heads=(1, 2), dim_multiple=2, dims=(2, 32),
                vanishing_increments=True, tags=("attention", "rotary"))
def softmax_attention_rope(d: int, *, heads: int) -> nn.Module:
    return SoftmaxAttention(d, heads, rope=True)
