"""Griffin's temporal-mixing layers (De et al. 2024): the recurrent block (causal conv +
RG-LRU) and local sliding-window attention."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .attention import SoftmaxAttention


class CausalConv1d(nn.Module):
    """Depthwise causal convolution ``(B, T, e) -> (B, T, e)``:
    ``y_t = b + sum_{s=0}^{k-1} w_s * x_{t-s}`` per channel (``x_{<1} = 0``)."""

    def __init__(self, e: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(e, e, kernel, groups=e, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))
        return self.conv(y).transpose(1, 2)


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit ``(B, T, e) -> (B, T, e)``, per channel:

    ``r_t = sigmoid(W_a x_t + b_a)``, ``i_t = sigmoid(W_i x_t + b_i)``,
    ``a_t = a^(c r_t)`` with ``a = sigmoid(Lambda)``, ``c = 8``,
    ``h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)``, ``h_0 = 0``; output ``h_t``.
    ``Lambda`` starts so that ``a`` is uniform in ``(0.9, 0.999)``.
    """

    def __init__(self, e: int, c: float = 8.0, a_range: tuple[float, float] = (0.9, 0.999)):
        super().__init__()
        self.c = c
        self.gate_a = nn.Linear(e, e)
        self.gate_i = nn.Linear(e, e)
        a = torch.empty(e).uniform_(*a_range)
        self.Lambda = nn.Parameter(torch.log(a) - torch.log1p(-a))  # inverse sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(self.gate_a(x))
        i = torch.sigmoid(self.gate_i(x))
        log_a = self.c * r * F.logsigmoid(self.Lambda)  # (B, T, e), <= 0
        a = torch.exp(log_a)
        mult = torch.sqrt(-torch.expm1(2.0 * log_a))  # sqrt(1 - a_t^2), accurate near a_t = 1
        u = mult * i * x
        h = x.new_zeros(x.shape[0], x.shape[2])
        out = []
        for t in range(x.shape[1]):
            h = a[:, t] * h + u[:, t]
            out.append(h)
        return torch.stack(out, dim=1)


class GriffinRecurrent(nn.Module):
    """Griffin's recurrent block ``(B, T, d) -> (B, T, d)`` with recurrence width ``d``:

    ``out = W_o (GeLU(W_g x) * RGLRU(Conv1D_4(W_x x)))``.
    """

    def __init__(self, d: int, kernel: int = 4):
        super().__init__()
        self.gate = nn.Linear(d, d)
        self.proj_x = nn.Linear(d, d)
        self.conv = CausalConv1d(d, kernel)
        self.rglru = RGLRU(d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.gelu(self.gate(x))
        h = self.rglru(self.conv(self.proj_x(x)))
        return self.out(g * h)


@register_layer("griffin_recurrent", heads=(1,), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "griffin", "gated", "conv"))
def griffin_recurrent(d: int, *, heads: int) -> nn.Module:
    return GriffinRecurrent(d)


GRIFFIN_WINDOW = 4


@register_layer("griffin_local_attention", heads=(1, 2), dim_multiple=2, dims=(2, 32),
                vanishing_increments=False, tags=("attention", "griffin", "local", "rotary"))
def griffin_local_attention(d: int, *, heads: int) -> nn.Module:
    """Causal softmax attention over the last ``GRIFFIN_WINDOW`` keys, with rotary positions."""
    return SoftmaxAttention(d, heads, rope=True, window=GRIFFIN_WINDOW)
