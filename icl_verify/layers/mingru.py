"""minGRU (Feng et al. 2024, "Were RNNs all we needed?"): a GRU whose gates read only the token."""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_layer
from .scan import Scan


class MinGRU(Scan):
    """``(B, T, d) -> (B, T, d)``: ``z_t = sigmoid(W_z x_t + b_z)``, ``h~_t = W_h x_t + b_h``,
    ``h_t = (1 - z_t) h_{t-1} + z_t h~_t`` (``h_0 = 0``); the output is ``h_t``."""

    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(d, 2 * d)

    def coefficients(self, x, conv):
        z, cand = self.proj(x).chunk(2, dim=-1)
        z = torch.sigmoid(z)
        return 1 - z, z * cand

    def initial(self, x):
        return (x.new_zeros(x.shape[0], x.shape[-1]),)

    def transition(self, h, c):
        return (c[0] * h[0] + c[1],)

    def emit(self, h, c):
        return h[0]


# 1 - z_t < 1 forgets old tokens geometrically: the newest token keeps an O(1) share of h_t.
@register_layer("mingru", heads=(1,), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "gated"))
def mingru(d: int, *, heads: int) -> nn.Module:
    return MinGRU(d)
