"""Multi-head causal linear attention (no normalisation)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer


def elu_plus_one(u: torch.Tensor) -> torch.Tensor:
    """The positive feature map ``phi(u) = elu(u) + 1``."""
    return F.elu(u) + 1.0


class LinearAttention(nn.Module):
    """Causal multi-head linear attention ``(B, T, d) -> (B, T, d)``.

    ``A(X)_t = W_o concat_h sum_{j<=t} (phi(q_t) . phi(k_j)) v_j`` with ``q, k, v`` of shape
    ``(B, H, T, d/H)``, ``phi`` the identity or ``elu + 1``, and no normalisation (so nothing
    bounds how much one more token moves the output).
    """

    def __init__(self, d: int, heads: int = 1, *, feature_map: str = "identity",
                 bias: bool = False):
        super().__init__()
        if d % heads:
            raise ValueError(f"d={d} is not divisible by heads={heads}")
        if feature_map not in ("identity", "elu"):
            raise ValueError(f"feature_map must be 'identity' or 'elu', got {feature_map!r}")
        self.d, self.heads, self.feature_map = d, heads, feature_map
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.out = nn.Linear(d, d, bias=bias)

    def phi(self, u: torch.Tensor) -> torch.Tensor:
        return elu_plus_one(u) if self.feature_map == "elu" else u

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys, values ``(B, H, T, dh)`` of the tokens ``x``."""
        b, t, d = x.shape
        shape = (b, t, self.heads, d // self.heads)
        return tuple(y.reshape(shape).transpose(1, 2) for y in self.qkv(x).chunk(3, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.split(x)
        s = self.phi(q) @ self.phi(k).transpose(-1, -2)  # (B, H, T, T)
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(), 0.0)
        y = (s @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)

    def states(self, x: torch.Tensor, *, output: bool = True):
        """Per-prefix running sums ``S_i = sum_{j<=i} phi(k_j) v_j^T``, ``i = 0..n``
        (``S_0 = 0``), ``(B, H, n+1, dh, dh)``, of a context ``x`` ``(B, n, d)``.
        Returns ``(A(x) or None, S)``."""
        _, k, v = self.split(x)
        kv = self.phi(k)[..., :, None] * v[..., None, :]
        sums = torch.cat([torch.zeros_like(kv[:, :, :1]), kv.cumsum(dim=2)], dim=2)
        return (self(x) if output else None), sums

    def step(self, cache, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, n+1, d)`` for the copies ``x`` ``(B, n+1, d)``, copy ``i`` after the
        first ``i`` context tokens: ``phi(q_i)^T (S_i + phi(k_i) v_i^T)``."""
        b, t, d = x.shape
        q, k, v = self.split(x)
        fq = self.phi(q)
        y = torch.einsum("bhtd,bhtde->bhte", fq, cache) + (fq * self.phi(k)).sum(-1, keepdim=True) * v
        return self.out(y.transpose(1, 2).reshape(b, t, d))


@register_layer("linear_attention", heads=(1, 2), dim_multiple=1, dims=(2, 32),
                vanishing_increments=False, tags=("attention", "linear"))
def linear_attention(d: int, *, heads: int) -> nn.Module:
    return LinearAttention(d, heads)


@register_layer("linear_attention_elu", heads=(1, 2), dim_multiple=1, dims=(2, 32),
                vanishing_increments=False, tags=("attention", "linear"))
def linear_attention_elu(d: int, *, heads: int) -> nn.Module:
    return LinearAttention(d, heads, feature_map="elu")
