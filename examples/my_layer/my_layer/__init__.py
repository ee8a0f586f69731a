"""Gated linear attention, registered with icl_verify as ``my_layer``.

``S_t = diag(a_t) S_{t-1} + k_t v_t^T`` and ``y_t = W_o S_t^T q_t`` with ``q_t, k_t, v_t = W_{qkv} x_t``
and the decay ``a_t = sigmoid(W_a x_t + b_a)``: a causal map ``(B, T, d) -> (B, T, d)`` whose state
``S`` is ``(B, d, d)``. ``states`` and ``step`` give icl_verify its fast path (prefix dynamics at
the cost of one forward pass); the property suite checks them against ``forward``.
"""
from __future__ import annotations

import torch
from torch import nn

from icl_verify import register_layer


class GatedLinearAttention(nn.Module):
    """``(B, T, d) -> (B, T, d)``; see the module docstring."""

    def __init__(self, d: int):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.gate = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def _parts(self, x: torch.Tensor):
        """``q, k, v, a``, each ``(..., d)``, of tokens ``x`` ``(..., d)``."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return q, k, v, torch.sigmoid(self.gate(x))

    @staticmethod
    def _advance(s, k, v, a):
        """``diag(a) S + k v^T``: states ``(..., d, d)`` one token further."""
        return a[..., :, None] * s + k[..., :, None] * v[..., None, :]

    def _read(self, q, s):
        """``W_o S^T q``: ``(..., d)`` from queries ``(..., d)`` and states ``(..., d, d)``."""
        return self.out((q[..., :, None] * s).sum(-2))

    def states(self, x: torch.Tensor, *, output: bool = True):
        """One causal pass over a context ``x`` ``(B, n, d)``: the outputs ``(B, n, d)`` (when
        ``output``) and the states after every prefix, ``S_0 = 0, S_1, ..., S_n`` ``(B, n+1, d, d)``."""
        q, k, v, a = self._parts(x)
        s = [x.new_zeros(x.shape[0], x.shape[-1], x.shape[-1])]
        for t in range(x.shape[1]):
            s.append(self._advance(s[-1], k[:, t], v[:, t], a[:, t]))
        s = torch.stack(s, dim=1)
        return (self._read(q, s[:, 1:]) if output else None), s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.states(x)[0]

    def step(self, cache: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The outputs ``(B, n+1, d)`` of ``n+1`` tokens ``x`` ``(B, n+1, d)``, token ``i`` placed
        after the first ``i`` context tokens (state ``S_i`` of ``cache``)."""
        q, k, v, a = self._parts(x)
        return self._read(q, self._advance(cache, k, v, a))


@register_layer("my_layer", dims=(2, 8), tags=("user", "recurrent"))
def my_layer(d: int, *, heads: int) -> nn.Module:
    return GatedLinearAttention(d)
