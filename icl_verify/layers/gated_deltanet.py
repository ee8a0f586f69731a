"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024): the delta rule with a decay gate."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .scan import Scan, heads_of


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x / max(||x||, 1e-6)`` over the last dim (an eps every float type represents)."""
    return F.normalize(x, dim=-1, eps=1e-6)


class GatedDeltaNet(Scan):
    """Gated delta rule ``(B, T, d) -> (B, T, d)``, ``H`` heads of width ``dh = d / H``:

    ``q_t, k_t`` L2-normalised per head, ``v_t`` (each ``(B, T, H, dh)``);
    ``a_t = exp(-exp(A_log) softplus(g_t + dt_bias))`` (decay) and ``b_t = sigmoid(beta_t)``
    (write strength), one scalar per head from ``(g, beta) = W_gate x_t``;

    ``S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T`` (``S`` ``(dh, dh)`` per head,
    ``S_0 = 0``), ``y_t = S_t q_t``, output ``W_o y``. Without the short convolutions and the
    output gate of the paper's block. ``A_log`` and ``dt_bias`` are vectors, so
    ``LayerInfo.build``'s ``scale`` leaves the decays alone.
    """

    def __init__(self, d: int, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.gate = nn.Linear(d, 2 * heads)
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(1.0, 16.0).log())
        self.dt_bias = nn.Parameter(torch.empty(heads).uniform_(-4.0, -2.0))
        self.out = nn.Linear(d, d, bias=False)

    def coefficients(self, x, conv):
        q, k, v = (heads_of(y, self.heads) for y in self.qkv(x).chunk(3, dim=-1))
        g, beta = self.gate(x).chunk(2, dim=-1)  # (B, T, H)
        decay = torch.exp(-torch.exp(self.A_log) * F.softplus(g + self.dt_bias))
        return unit(q), unit(k), v, decay, torch.sigmoid(beta)

    def initial(self, x):
        dh = x.shape[-1] // self.heads
        return (x.new_zeros(x.shape[0], self.heads, dh, dh),)

    @staticmethod
    def write(S, c):
        """``u_t = b_t (v_t - a_t S_{t-1} k_t)``, so that ``S_t = a_t S_{t-1} + u_t k_t^T``."""
        _, k, v, a, b = c
        return b[..., None] * (v - a[..., None] * torch.einsum("...vk,...k->...v", S, k))

    def transition(self, h, c):
        (S,), k, a = h, c[1], c[3]
        return ((a[..., None, None] * S).addcmul_(self.write(S, c)[..., None], k[..., None, :]),)

    def emit(self, h, c):
        return self.out(torch.einsum("...vk,...k->...v", h[0], c[0]).flatten(-2))

    def read(self, h, c):
        """``S_t q_t = a_t S_{t-1} q_t + u_t (k_t . q_t)``, without forming ``S_t``."""
        (S,), (q, k, _, a, _) = h, c
        y = (a[..., None] * torch.einsum("...vk,...k->...v", S, q)
             + self.write(S, c) * (k * q).sum(-1, keepdim=True))
        return self.out(y.flatten(-2))


# The decay a_t < 1 forgets old tokens geometrically and b_t k_t k_t^T overwrites the memory along
# the newest key, so the newest token keeps an O(1) share of the output: no O(1/i) bound.
@register_layer("gated_deltanet", heads=(1, 2), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "linear", "delta", "gated"))
def gated_deltanet(d: int, *, heads: int) -> nn.Module:
    return GatedDeltaNet(d, heads)
