"""A recurrence over per-token coefficients, with its reference scan and its fast path.

Every recurrent layer of the 2024-2026 families (gated DeltaNet, Mamba-2, mLSTM, RWKV-7,
retention, minGRU) has the form

    c_t = coefficients(x_t, Conv(x)_t)      (per token; the convolution is optional)
    h_t = transition(h_{t-1}, c_t)          (h_0 = 0; h a tuple of tensors)
    out_t = emit(h_t, c_t)                  ((B, T, d))

so one base class gives them the forward scan and the ``states``/``step`` pair of
:mod:`icl_verify.prefix_cache`: the per-prefix states ``h_0..h_n`` of the context, then one batched
step per copy of the query, ``read(h_{i}, c) = emit(transition(h_i, c), c)`` (which a subclass
may fuse so that the new states are never formed). ``transition``, ``emit`` and ``read`` act on
any leading dims, so the same code steps one position of the scan or ``n+1`` copies at once.
"""
from __future__ import annotations

import torch
from torch import nn

from .conv import CausalConv1d


Tensors = tuple[torch.Tensor, ...]


def stacked(hs: list) -> Tensors:
    """States ``[h_1, .., h_T]`` (tuples of ``(B, ...)``) as one tuple of ``(B, T, ...)``."""
    return tuple(torch.stack(parts, dim=1) for parts in zip(*hs))


def heads_of(y: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, T, H * m) -> (B, T, H, m)``."""
    return y.unflatten(-1, (heads, y.shape[-1] // heads))


class Scan(nn.Module):
    """Base class: subclasses may set ``conv`` (a :class:`CausalConv1d` over ``stream(x)``;
    ``None`` by default) and implement ``coefficients``, ``initial``, ``transition`` and ``emit``."""

    def __init__(self):
        super().__init__()
        self.conv: CausalConv1d | None = None

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution's input ``(B, T, e)`` (only called when ``conv`` is set)."""
        return x

    def coefficients(self, x: torch.Tensor, conv: torch.Tensor | None) -> Tensors:
        """Per-token coefficients, each ``(B, T, ...)``, from the tokens ``x`` ``(B, T, d)`` (token
        ``t`` at position ``t``) and the convolution's output ``(B, T, e)`` (or ``None``)."""
        raise NotImplementedError

    def initial(self, x: torch.Tensor) -> Tensors:
        """The zero state ``h_0`` for the batch of ``x``: a tuple of ``(B, ...)`` tensors."""
        raise NotImplementedError

    def transition(self, h: Tensors, c: Tensors) -> Tensors:
        """``h_t`` from ``h_{t-1}`` and ``c_t``, over any leading dims shared by both."""
        raise NotImplementedError

    def emit(self, h: Tensors, c: Tensors) -> torch.Tensor:
        """Outputs ``(..., d)`` from the states ``h_t`` and coefficients ``c_t`` (any leading dims)."""
        raise NotImplementedError

    def read(self, h: Tensors, c: Tensors) -> torch.Tensor:
        """``emit(transition(h, c), c, x)``: the outputs one step after the states ``h``.
        Subclasses may fuse it so that the new states are never formed (the batched step of
        :meth:`step` then reads each cached state once and writes nothing of its size)."""
        return self.emit(self.transition(h, c), c)

    def _coefficients(self, x: torch.Tensor, window: torch.Tensor | None = None):
        """``(coefficients, convolution input)``; with ``window`` (the context's convolution
        inputs ``(B, n, e)``) token ``i`` of ``x`` is convolved after ``window[:, :i]``."""
        if self.conv is None:
            return self.coefficients(x, None), None
        u = self.stream(x)
        return self.coefficients(x, self.conv(u) if window is None else self.conv.step(window, u)), u

    def run(self, h: Tensors, c: Tensors, steps: int) -> list:
        """The states ``h_1..h_steps`` after ``h`` under the coefficients ``c`` ``(B, T, ...)``."""
        hs = []
        for t in range(steps):
            h = self.transition(h, tuple(ci[:, t] for ci in c))
            hs.append(h)
        return hs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scan over ``x`` ``(B, T, d)``, ``T >= 1``; the last output comes from :meth:`read`,
        so the last state is never formed (a batch of single tokens forms none)."""
        c, _ = self._coefficients(x)
        h = self.initial(x)
        hs = self.run(h, c, x.shape[1] - 1)
        last = self.read(hs[-1] if hs else h, tuple(ci[:, -1] for ci in c))[:, None]
        if not hs:
            return last
        body = self.emit(stacked(hs), tuple(ci[:, :-1] for ci in c))
        return torch.cat([body, last], dim=1)

    def states(self, x: torch.Tensor, *, output: bool = True):
        """Per-prefix cache of a context ``x`` ``(B, n, d)``: the convolution's inputs (or
        ``None``) and the states ``h_0..h_n`` ``(B, n+1, ...)``. Returns ``(A(x) or None, cache)``."""
        c, u = self._coefficients(x)
        h = self.initial(x)
        hs = stacked([h] + self.run(h, c, x.shape[1]))
        out = self.emit(tuple(part[:, 1:] for part in hs), c) if output else None
        return out, (u, hs)

    def step(self, cache, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, n+1, d)`` for copies ``x`` ``(B, n+1, d)``, copy ``i`` at position ``i``
        after the first ``i`` context tokens: one batched transition from ``h_i``."""
        window, hs = cache
        c, _ = self._coefficients(x, window)
        return self.read(hs, c)
