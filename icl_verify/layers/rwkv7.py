"""RWKV-7-style time mixing (Peng et al. 2025): the generalised delta rule with per-channel
decay and an in-context learning rate."""
from __future__ import annotations

import math

import torch
from torch import nn

from ._registry import register_layer
from .gated_deltanet import unit
from .conv import CausalConv1d
from .scan import Scan, heads_of


class RWKV7(Scan):
    """Time mixing ``(B, T, d) -> (B, T, d)``, ``H`` heads of width ``dh = d / H``:

    token shift ``x'_t = Conv1D_2(x)_t`` (depthwise, causal: a learned mix of ``x_t`` and
    ``x_{t-1}``); receptance, key, value ``r_t, k_t, v_t = W_{r,k,v} x'_t`` ``(B, T, H, dh)``;
    per-channel decay ``w_t = exp(-e^{-1/2} sigmoid(W_w x'_t + b_w))`` and in-context learning
    rate ``a_t = sigmoid(W_a x'_t + b_a)``; removal key ``kappa_t = k_t / ||k_t||`` (per head),
    replacement key ``k~_t = a_t * k_t``;

    ``S_t = S_{t-1} (diag(w_t) - kappa_t (a_t * kappa_t)^T) + v_t k~_t^T`` (``(dh, dh)`` per
    head, ``S_0 = 0``), ``y_t = S_t r_t``; output ``W_o y``. Without the bonus term, the
    low-rank gate projections and the group norm of RWKV-7's block.
    """

    def __init__(self, d: int, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.conv = CausalConv1d(d, 2)
        self.rkv = nn.Linear(d, 3 * d, bias=False)
        self.wa = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d, bias=False)

    def coefficients(self, x, conv):
        r, k, v = (heads_of(y, self.heads) for y in self.rkv(conv).chunk(3, dim=-1))
        w, a = (heads_of(y, self.heads) for y in self.wa(conv).chunk(2, dim=-1))
        w = torch.exp(-math.exp(-0.5) * torch.sigmoid(w))
        a = torch.sigmoid(a)
        kappa = unit(k)
        return r, kappa, a * kappa, a * k, v, w

    def initial(self, x):
        dh = x.shape[-1] // self.heads
        return (x.new_zeros(x.shape[0], self.heads, dh, dh),)

    def transition(self, h, c):
        (S,), (_, kappa, a_kappa, k, v, w) = h, c
        removed = torch.einsum("...vk,...k->...v", S, kappa)[..., None] * a_kappa[..., None, :]
        return (S * w[..., None, :] - removed + v[..., None] * k[..., None, :],)

    def emit(self, h, c):
        return self.out(torch.einsum("...vk,...k->...v", h[0], c[0]).flatten(-2))


# w_t < 1 decays every channel and the delta rule overwrites along kappa_t, so the newest token
# keeps an O(1) share of S_t: no O(1/i) bound.
@register_layer("rwkv7", heads=(1, 2), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "linear", "delta", "gated", "conv"))
def rwkv7(d: int, *, heads: int) -> nn.Module:
    return RWKV7(d, heads)
