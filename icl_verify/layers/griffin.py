"""Griffin's temporal-mixing layers (De et al. 2024): the recurrent block (causal conv +
RG-LRU) and local sliding-window attention."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_layer
from .conv import CausalConv1d
from .attention import SoftmaxAttention


class SqrtBoundDerivative(torch.autograd.Function):
    """``sqrt(x)`` whose derivative is capped at ``MAX_GRAD`` near ``x = 0``, as RecurrentGemma
    does: where the gate ``r_t`` underflows, ``a_t = 1`` and the true ``1/(2 sqrt(0))`` would make
    every Jacobian (and so the error model) infinite."""

    MAX_GRAD = 1000.0

    @staticmethod
    def forward(x):
        return torch.sqrt(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def _slope(x):
        return 0.5 / torch.sqrt(x.clamp_min(1.0 / (4.0 * SqrtBoundDerivative.MAX_GRAD ** 2)))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * SqrtBoundDerivative._slope(x)

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return tangent * SqrtBoundDerivative._slope(x)


def sqrt_bound_derivative(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` with a derivative capped at 1000 (see :class:`SqrtBoundDerivative`)."""
    return SqrtBoundDerivative.apply(x)


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

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, sqrt(1 - a_t^2) i_t x_t)``, each ``(B, T, e)``: ``h_t = a_t h_{t-1} + u_t``."""
        r = torch.sigmoid(self.gate_a(x))
        i = torch.sigmoid(self.gate_i(x))
        log_a = self.c * r * F.logsigmoid(self.Lambda)  # (B, T, e), <= 0
        mult = sqrt_bound_derivative(-torch.expm1(2.0 * log_a))  # sqrt(1 - a_t^2), accurate near a_t = 1
        return torch.exp(log_a), mult * i * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, u = self.coefficients(x)
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

    def states(self, x: torch.Tensor, *, output: bool = True):
        """Per-prefix cache of a context ``x`` ``(B, n, d)``: the convolution's inputs
        ``W_x c_j`` ``(B, n, d)`` (its window) and the RG-LRU states ``h_0..h_n`` ``(B, n+1, d)``.
        Returns ``(A(x) or None, (window, h))``; the scan over the context is the only loop."""
        window = self.proj_x(x)
        h = self.rglru(self.conv(window))
        out = self.out(F.gelu(self.gate(x)) * h) if output else None
        return out, (window, torch.cat([h.new_zeros(h.shape[0], 1, h.shape[2]), h], dim=1))

    def step(self, cache, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, n+1, d)`` for copies ``x`` ``(B, n+1, d)``, copy ``i`` after the first
        ``i`` context tokens: one convolution tap and one RG-LRU step each, batched."""
        window, h = cache
        a, u = self.rglru.coefficients(self.conv.step(window, self.proj_x(x)))
        return self.out(F.gelu(self.gate(x)) * (a * h + u))


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
