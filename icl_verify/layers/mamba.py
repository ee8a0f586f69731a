"""A Mamba-style selective state-space mixer (Gu & Dao 2023), reference scan."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .conv import CausalConv1d


class Mamba(nn.Module):
    """Selective SSM mixer ``(B, T, d) -> (B, T, d)``, inner width ``e = expand * d``, state ``N``:

    ``x, z = in_proj(u)`` (each ``e``); ``x = silu(Conv1D_4(x))`` (causal, depthwise);
    ``dt_t = softplus(W_dt x_t + b_dt)`` (``e``), ``B_t = W_B x_t``, ``C_t = W_C x_t`` (``N``),
    ``A = -exp(A_log)`` (``e x N``);
    ``h_t = exp(dt_t A) * h_{t-1} + (dt_t x_t) B_t^T`` (``e x N``, ``h_0 = 0``),
    ``y_t = h_t C_t + D * x_t``; output ``out_proj(y * silu(z))``.

    ``A_log`` is stored flat (``e*N``) so that ``LayerInfo.build``'s ``scale`` (which multiplies
    parameters with ``ndim >= 2``) leaves the decay rates alone.
    """

    def __init__(self, d: int, *, expand: int = 2, state: int = 4, kernel: int = 4,
                 dt_range: tuple[float, float] = (1e-3, 1e-1)):
        super().__init__()
        e = expand * d
        self.e, self.state = e, state
        self.in_proj = nn.Linear(d, 2 * e, bias=False)
        self.conv = CausalConv1d(e, kernel)
        self.dt_proj = nn.Linear(e, e)
        self.B_proj = nn.Linear(e, state, bias=False)
        self.C_proj = nn.Linear(e, state, bias=False)
        # S4D-real initialisation: A = -(1..N) per channel; dt log-uniform in dt_range.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(e))
        self.D = nn.Parameter(torch.ones(e))
        dt = torch.exp(torch.empty(e).uniform_(math.log(dt_range[0]), math.log(dt_range[1])))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.out_proj = nn.Linear(e, d, bias=False)

    def mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-position SSM coefficients from the convolved inner stream ``x`` ``(B, T, e)``:
        ``decay = exp(dt A)`` and ``drive = (dt x) B^T`` ``(B, T, e, N)``, and ``C`` ``(B, T, N)``."""
        dt = F.softplus(self.dt_proj(x))  # (B, T, e)
        Bt, Ct = self.B_proj(x), self.C_proj(x)  # (B, T, N)
        A = -torch.exp(self.A_log).reshape(self.e, self.state)  # (e, N)
        return torch.exp(dt[..., None] * A), (dt * x)[..., None] * Bt[:, :, None, :], Ct

    def scan(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mixer on ``u`` ``(B, T, d)``: output ``(B, T, d)``, the convolution's inputs
        ``(B, T, e)`` and the states ``h_1..h_T`` ``(B, T, e, N)``."""
        b, t, _ = u.shape
        x_in, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv(x_in))  # (B, T, e)
        decay, drive, Ct = self.mix(x)
        h = u.new_zeros(b, self.e, self.state)
        hs = []
        for s in range(t):
            h = decay[:, s] * h + drive[:, s]
            hs.append(h)
        hs = torch.stack(hs, dim=1) if hs else u.new_zeros(b, 0, self.e, self.state)
        y = (hs * Ct[:, :, None, :]).sum(-1) + self.D * x
        return self.out_proj(y * F.silu(z)), x_in, hs

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.scan(u)[0]

    def states(self, u: torch.Tensor, *, output: bool = True):
        """Per-prefix cache of a context ``u`` ``(B, n, d)``: the convolution's inputs
        ``(B, n, e)`` and the SSM states ``h_0..h_n`` ``(B, n+1, e, N)``.
        Returns ``(A(u), (window, h))`` (the output comes with the scan)."""
        out, window, hs = self.scan(u)
        return out, (window, torch.cat([hs.new_zeros(hs.shape[0], 1, *hs.shape[2:]), hs], dim=1))

    def step(self, cache, u: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, n+1, d)`` for copies ``u`` ``(B, n+1, d)``, copy ``i`` after the first
        ``i`` context tokens: one convolution tap and one SSM step each, batched."""
        window, h = cache
        x_in, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv.step(window, x_in))
        decay, drive, Ct = self.mix(x)
        y = ((decay * h + drive) * Ct[:, :, None, :]).sum(-1) + self.D * x
        return self.out_proj(y * F.silu(z))

@register_layer("mamba", heads=(1,), dims=(2, 32), vanishing_increments=False,
                tags=("ssm", "recurrent", "gated", "conv"))
def mamba(d: int, *, heads: int) -> nn.Module:
    return Mamba(d)
