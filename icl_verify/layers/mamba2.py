"""Mamba-2 (Dao & Gu 2024): the state-space dual layer, one scalar decay per head."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .conv import CausalConv1d
from .scan import Scan, heads_of


class Mamba2(Scan):
    """SSD mixer ``(B, T, d) -> (B, T, d)``: inner width ``e = expand * d`` in ``H`` heads of
    width ``P = e / H``, state size ``N`` shared by the heads:

    ``(x, B, C) = silu(Conv1D_4(W_xbc u))`` (``e``, ``N``, ``N``); ``(z, dt) = W_zdt u``;
    ``dt_t = softplus(dt_t + dt_bias)`` and ``a_t = exp(dt_t A)``, ``A = -exp(A_log)`` (one
    scalar per head, ``(B, T, H)``);
    ``h_t = a_t h_{t-1} + (dt_t x_t) B_t^T`` (``(P, N)`` per head, ``h_0 = 0``),
    ``y_t = h_t C_t + D x_t``; output ``W_out (y * silu(z))`` (without the paper's gated norm).
    ``A_log``, ``dt_bias`` and ``D`` are vectors, untouched by ``LayerInfo.build``'s ``scale``.
    """

    def __init__(self, d: int, heads: int = 1, *, expand: int = 2, state: int = 4, kernel: int = 4,
                 dt_range: tuple[float, float] = (1e-3, 1e-1)):
        super().__init__()
        e = expand * d
        self.heads, self.e, self.state = heads, e, state
        self.xbc = nn.Linear(d, e + 2 * state, bias=False)
        self.zdt = nn.Linear(d, e + heads, bias=False)
        self.conv = CausalConv1d(e + 2 * state, kernel)
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(1.0, 16.0).log())
        dt = torch.exp(torch.empty(heads).uniform_(math.log(dt_range[0]), math.log(dt_range[1])))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.D = nn.Parameter(torch.ones(heads))
        self.out = nn.Linear(e, d, bias=False)

    def stream(self, x):
        return self.xbc(x)

    def coefficients(self, x, conv):
        xs, Bt, Ct = F.silu(conv).split([self.e, self.state, self.state], dim=-1)
        z, dt = self.zdt(x).split([self.e, self.heads], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (B, T, H)
        xs = heads_of(xs, self.heads)  # (B, T, H, P)
        return torch.exp(-dt * torch.exp(self.A_log)), dt[..., None] * xs, Bt, Ct, xs, z

    def initial(self, x):
        return (x.new_zeros(x.shape[0], self.heads, self.e // self.heads, self.state),)

    def transition(self, h, c):
        a, drive, Bt = c[:3]
        return ((a[..., None, None] * h[0]).addcmul_(drive[..., None], Bt[..., None, None, :]),)

    def emit(self, h, c):
        return self.finish(torch.einsum("...hpn,...n->...hp", h[0], c[3]), c)

    def read(self, h, c):
        """``h_t C_t = a_t h_{t-1} C_t + (dt_t x_t) (B_t . C_t)``, without forming ``h_t``."""
        a, drive, Bt, Ct = c[:4]
        hc = torch.einsum("...hpn,...n->...hp", h[0], Ct)
        return self.finish(a[..., None] * hc + drive * (Bt * Ct).sum(-1)[..., None, None], c)

    def finish(self, hc, c):
        """Output ``W_out ((h C + D x) * silu(z))`` from ``h_t C_t`` ``(..., H, P)``."""
        xs, z = c[4:]
        return self.out((hc + self.D[:, None] * xs).flatten(-2) * F.silu(z))


# a_t < 1 forgets old tokens geometrically, so the newest token keeps an O(1) share of h_t:
# no O(1/i) bound.
@register_layer("mamba2", heads=(1, 2), dims=(2, 32), vanishing_increments=False,
                tags=("ssm", "recurrent", "gated", "conv"))
def mamba2(d: int, *, heads: int) -> nn.Module:
    return Mamba2(d, heads)
