"""RetNet's retention (Sun et al. 2023): linear attention with a fixed decay per head."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .attention import rotary
from .scan import Scan, heads_of


class Retention(Scan):
    """Multi-scale retention ``(B, T, d) -> (B, T, d)``, ``H`` heads of width ``dh = d / H``
    (even):

    ``q_t, k_t / sqrt(dh)`` rotated at position ``t`` (rotary), ``v_t``, each ``(B, T, H, dh)``;
    ``S_t = gamma_h S_{t-1} + v_t k_t^T`` (``(dh, dh)`` per head, ``S_0 = 0``) with the fixed
    decays ``gamma_h = 1 - 2^(-5-h)``, ``y_t = S_t q_t``; output ``W_o (swish(W_g x_t) * y_t)``
    (without RetNet's group norm). ``gamma`` is a buffer, not a parameter.
    """

    def __init__(self, d: int, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.gate = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.register_buffer("gamma", 1 - 2.0 ** (-5.0 - torch.arange(heads, dtype=torch.float32)))

    def coefficients(self, x, conv):
        q, k, v = (heads_of(y, self.heads) for y in self.qkv(x).chunk(3, dim=-1))
        q, k = (rotary(y.transpose(1, 2)).transpose(1, 2) for y in (q, k))  # position t = index t
        return q, k / math.sqrt(k.shape[-1]), v, F.silu(self.gate(x))

    def initial(self, x):
        dh = x.shape[-1] // self.heads
        return (x.new_zeros(x.shape[0], self.heads, dh, dh),)

    def transition(self, h, c):
        _, k, v, _ = c
        return (self.gamma[:, None, None] * h[0] + v[..., None] * k[..., None, :],)

    def emit(self, h, c):
        y = torch.einsum("...vk,...k->...v", h[0], c[0]).flatten(-2)
        return self.out(c[-1] * y)


# gamma_h < 1 forgets old tokens geometrically and nothing normalises the sum, so the newest
# token keeps an O(1) share of the output: no O(1/i) bound.
@register_layer("retention", heads=(1, 2), dim_multiple=2, dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "linear", "rotary"))
def retention(d: int, *, heads: int) -> nn.Module:
    return Retention(d, heads)
