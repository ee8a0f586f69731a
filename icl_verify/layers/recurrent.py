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
