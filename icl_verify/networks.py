"""Networks whose first operation is dense: ``y = f(W_1 z + b_1, ..., W_K z + b_K)``.

Each network exposes ``first`` (the ``K`` dense layers reading ``z``; ``K = 1`` for an MLP,
``K = 2`` for a gated network: gate and up) and ``rest(hs)`` (everything after them), so the
update code can change the first matrices without knowing the rest.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu}


class MLP(nn.Module):
    """``f(z) = W_L act(... act(W_1 z + b_1) ...) + b_L``: ``(..., d) -> (..., d_out)``."""

    def __init__(self, d: int, hidden: int, d_out: int | None = None, *, depth: int = 1,
                 act: str = "relu"):
        super().__init__()
        self.act_name = act
        self.act = ACTIVATIONS[act]
        widths = [d] + [hidden] * depth + [d if d_out is None else d_out]
        self.first = nn.ModuleList([nn.Linear(widths[0], widths[1])])
        self.later = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[1:-1], widths[2:]))

    def rest(self, hs: list[torch.Tensor]) -> torch.Tensor:
        """The network after its first dense layer, from the pre-activations ``hs = [h_1]``."""
        (h,) = hs
        for lin in self.later:
            h = lin(self.act(h))
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.rest([lin(z) for lin in self.first])


class GatedMLP(nn.Module):
    """SwiGLU / GeGLU: ``f(z) = W_down (act(W_gate z) * (W_up z))``: ``(..., d) -> (..., d_out)``.

    Two first dense matrices read ``z``; each gets its own rank-one update."""

    def __init__(self, d: int, hidden: int, d_out: int | None = None, *, act: str = "silu",
                 bias: bool = False):
        super().__init__()
        self.act_name = act
        self.act = ACTIVATIONS[act]
        self.first = nn.ModuleList([nn.Linear(d, hidden, bias=bias), nn.Linear(d, hidden, bias=bias)])
        self.down = nn.Linear(hidden, d if d_out is None else d_out, bias=bias)

    def rest(self, hs: list[torch.Tensor]) -> torch.Tensor:
        gate, up = hs
        return self.down(self.act(gate) * up)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.rest([lin(z) for lin in self.first])
