"""xLSTM's mLSTM (Beck et al. 2024): a matrix memory with exponential input gate, forget gate
and normaliser state, stabilised."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .scan import Scan, heads_of


class MLSTM(Scan):
    """Stabilised mLSTM ``(B, T, d) -> (B, T, d)``, ``H`` heads of width ``dh = d / H``:

    ``q_t, k_t / sqrt(dh), v_t`` ``(B, T, H, dh)``; pre-activations ``i_t`` (exponential input
    gate) and ``log f_t = logsigmoid(f_t)`` (forget gate), one scalar per head;
    ``m_t = max(log f_t + m_{t-1}, i_t)`` (the stabiliser), ``f'_t = exp(log f_t + m_{t-1} - m_t)``,
    ``i'_t = exp(i_t - m_t)``;
    ``C_t = f'_t C_{t-1} + i'_t v_t k_t^T`` (``(dh, dh)``), ``n_t = f'_t n_{t-1} + i'_t k_t``
    (``(dh,)``), ``C_0 = 0, n_0 = 0, m_0 = 0``;
    ``y_t = C_t q_t / (max(|n_t . q_t|, exp(-m_t)) + eps)``, ``eps = 1e-6`` as in xLSTM's code
    (without it a zero query after a large ``m_t`` gives ``0 / 0`` once ``exp(-m_t)`` underflows);
    output ``W_o (sigmoid(W_og x_t) * y_t)``. Up to ``eps`` the stabiliser cancels: ``y_t`` is
    the unstabilised ``C~ q / max(|n~ . q|, 1)``.
    """

    EPS = 1e-6

    def __init__(self, d: int, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.gates = nn.Linear(d, 2 * heads)
        with torch.no_grad():  # forget gates start near 1 (biases 3..6), as in xLSTM
            self.gates.bias[heads:] = torch.linspace(3.0, 6.0, heads)
        self.out_gate = nn.Linear(d, d)
        self.out = nn.Linear(d, d, bias=False)

    def coefficients(self, x, conv):
        q, k, v = (heads_of(y, self.heads) for y in self.qkv(x).chunk(3, dim=-1))
        i, f = self.gates(x).chunk(2, dim=-1)  # (B, T, H)
        return q, k / math.sqrt(k.shape[-1]), v, i, F.logsigmoid(f), torch.sigmoid(self.out_gate(x))

    def initial(self, x):
        b, dh = x.shape[0], x.shape[-1] // self.heads
        return (x.new_zeros(b, self.heads, dh, dh), x.new_zeros(b, self.heads, dh),
                x.new_zeros(b, self.heads))

    def transition(self, h, c):
        C, n, m = h
        _, k, v, i, log_f, _ = c
        m_new = torch.maximum(log_f + m, i)
        f, i = torch.exp(log_f + m - m_new), torch.exp(i - m_new)
        C = f[..., None, None] * C + (i[..., None] * v)[..., None] * k[..., None, :]
        return C, f[..., None] * n + i[..., None] * k, m_new

    def emit(self, h, c):
        C, n, m = h
        q, og = c[0], c[-1]
        den = torch.maximum((n * q).sum(-1).abs(), torch.exp(-m))[..., None] + self.EPS
        y = torch.einsum("...vk,...k->...v", C, q) / den
        return self.out(og * y.flatten(-2))


# The forget gate f_t < 1 discounts old tokens geometrically, so the newest token keeps an O(1)
# share of C_t and n_t: no O(1/i) bound.
@register_layer("mlstm", heads=(1, 2), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "linear", "gated", "xlstm"))
def mlstm(d: int, *, heads: int) -> nn.Module:
    return MLSTM(d, heads)
