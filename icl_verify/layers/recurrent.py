"""Classic recurrent layers (Elman RNN, GRU, LSTM) as contextual layers."""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register_layer


class Recurrent(nn.Module):
    """A one-layer ``torch.nn`` recurrence of width ``d`` started from zero state,
    ``(B, T, d) -> (B, T, d)``; the output at ``t`` is the hidden state ``h_t``.

    - ``rnn``:  ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``
    - ``gru``:  ``torch.nn.GRU`` gates (reset, update, candidate)
    - ``lstm``: ``torch.nn.LSTM``; ``h_t = o_t * tanh(c_t)`` (the cell state is not output)
    """

    CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

    def __init__(self, d: int, kind: str = "rnn"):
        super().__init__()
        if kind not in self.CELLS:
            raise ValueError(f"kind must be one of {sorted(self.CELLS)}, got {kind!r}")
        self.kind = kind
        self.cell = self.CELLS[kind](d, d, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.cell(x)
        return out

    def states(self, x: torch.Tensor, *, output: bool = True):
        """Hidden states after each prefix of a context ``x`` ``(B, n, d)``: ``h_0..h_n``
        ``(B, n+1, d)`` (``h_0 = 0``), for the LSTM with the cell states ``c_0..c_n``.
        Returns ``(A(x) = h_1..h_n, cache)`` (the output costs nothing extra)."""
        out, _ = self.cell(x)
        h = torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out], dim=1)
        if self.kind != "lstm":
            return out, h
        # c_t = f_t c_{t-1} + i_t g_t, with the gates recomputed from x_t and h_{t-1} at once
        cell = self.cell
        pre = x @ cell.weight_ih_l0.T + cell.bias_ih_l0 + h[:, :-1] @ cell.weight_hh_l0.T + cell.bias_hh_l0
        i, f, g, _ = pre.chunk(4, dim=-1)
        i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
        c = [h.new_zeros(h.shape[0], h.shape[2])]
        for t in range(x.shape[1]):
            c.append(f[:, t] * c[-1] + i[:, t] * g[:, t])
        return out, (h, torch.stack(c, dim=1))

    def step(self, cache, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(B, n+1, d)`` for the copies ``x`` ``(B, n+1, d)``: copy ``i`` is one cell
        step from the state after ``i`` context tokens, all copies in one batched call."""
        b, t, d = x.shape
        flat = lambda h: h.reshape(1, b * t, h.shape[-1])  # noqa: E731
        state = (flat(cache[0]), flat(cache[1])) if self.kind == "lstm" else flat(cache)
        out, _ = self.cell(x.reshape(b * t, 1, d), state)
        return out.reshape(b, t, -1)


@register_layer("elman_rnn", heads=(1,), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent",))
def elman_rnn(d: int, *, heads: int) -> nn.Module:
    return Recurrent(d, "rnn")


@register_layer("gru", heads=(1,), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "gated"))
def gru(d: int, *, heads: int) -> nn.Module:
    return Recurrent(d, "gru")


@register_layer("lstm", heads=(1,), dims=(2, 32), vanishing_increments=False,
                tags=("recurrent", "gated"))
def lstm(d: int, *, heads: int) -> nn.Module:
    return Recurrent(d, "lstm")
