"""xLSTM's sLSTM (Beck et al. 2024): scalar memory with exponential input gate, normaliser
state and recurrent gates (block-diagonal per head), stabilised."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .scan import Scan, heads_of


class SLSTM(Scan):
    """Stabilised sLSTM ``(B, T, d) -> (B, T, d)``, ``d`` cells in ``H`` heads of width ``dh``:

    pre-activations ``p^g_t = W_g x_t + b_g + R_g h_{t-1}`` for ``g = z, i, f, o`` (``R_g``
    block-diagonal, one ``(dh, dh)`` block per head); ``z_t = tanh(p^z)``, ``log f_t =
    logsigmoid(p^f)``, ``o_t = sigmoid(p^o)``, exponential input gate ``exp(p^i)``;
    ``m_t = max(log f_t + m_{t-1}, p^i_t)``, ``f'_t = exp(log f_t + m_{t-1} - m_t)``,
    ``i'_t = exp(p^i_t - m_t)``; ``c_t = f'_t c_{t-1} + i'_t z_t``, ``n_t = f'_t n_{t-1} + i'_t``,
    ``h_t = o_t c_t / n_t`` (all per cell, ``(B, d)``); output ``W_out h_t``.
    ``c_0 = n_0 = h_0 = 0`` and ``m_0 = -inf``, so that ``n_t >= 1`` at every step: where
    ``m_t = p^i_t`` then ``i'_t = 1``, else ``f'_t = 1`` and ``n_t >= n_{t-1}``.
    """

    def __init__(self, d: int, heads: int = 1):
        super().__init__()
        self.heads, dh = heads, d // heads
        self.proj = nn.Linear(d, 4 * d)
        self.R = nn.Parameter(torch.randn(4, heads, dh, dh) / math.sqrt(dh))
        with torch.no_grad():  # forget gates start near 1 (biases 3..6), as in xLSTM
            self.proj.bias[2 * d:3 * d] = torch.linspace(3.0, 6.0, d)
        self.out = nn.Linear(d, d, bias=False)

    def coefficients(self, x, conv):
        return (self.proj(x),)

    def initial(self, x):
        zero = x.new_zeros(x.shape[0], x.shape[-1])
        return zero, zero, torch.full_like(zero, float("-inf")), zero

    def transition(self, h, c):
        cell, n, m, out = h
        rec = torch.einsum("...hk,ghkj->g...hj", heads_of(out, self.heads), self.R).flatten(-2)
        z, i, f, o = (p + r for p, r in zip(c[0].chunk(4, dim=-1), rec.unbind(0)))
        log_f = F.logsigmoid(f)
        m_new = torch.maximum(log_f + m, i)
        f, i = torch.exp(log_f + m - m_new), torch.exp(i - m_new)
        cell, n = f * cell + i * torch.tanh(z), f * n + i
        return cell, n, m_new, torch.sigmoid(o) * cell / n

    def emit(self, h, c):
        return self.out(h[-1])


# The forget gate f_t < 1 discounts old tokens geometrically and the recurrent gates read
# h_{t-1}: no O(1/i) bound.
@register_layer("slstm", heads=(1, 2), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "gated", "xlstm"))
def slstm(d: int, *, heads: int) -> nn.Module:
    return SLSTM(d, heads)
