"""von Oswald et al. 2023 ("Transformers learn in-context by gradient descent"): linear
self-attention weights for which one layer computes one gradient-descent step, in closed form.

Tokens ``e_j = (x_j, y_j)`` in ``R^(dx + dy)``, the query ``e_q = (x_q, 0)``. With
``W_q = W_k = [[I, 0], [0, 0]]``, ``W_v = [[0, 0], [0, I]]`` and ``W_o = (lr / N) I`` (one head,
no feature map, no normalisation: :class:`~icl_verify.layers.linear_attention.LinearAttention`)
and a residual connection, the query's position after the ``N`` context tokens holds

    e_q + A(E)_q = (x_q, (lr / N) sum_j y_j x_j^T x_q) = (x_q, W_1 x_q),

``W_1 = W_0 - lr grad L(W_0)`` with ``L(W) = 1/(2N) sum_j ||W x_j - y_j||^2`` and ``W_0 = 0``:
the prediction of one gradient step on the in-context least-squares loss. (The query's own
value is zero, so its own key adds nothing.)
"""
from __future__ import annotations

import torch

from ..blocks import Block, get_composition
from ..seeding import seeded
from ..layers.linear_attention import LinearAttention
from ..networks import MLP


def gd_layer(dx: int, dy: int, lr: float, n: int, *, dtype: torch.dtype = torch.float64) -> LinearAttention:
    """The linear attention layer of the construction for ``n`` in-context examples."""
    d = dx + dy
    layer = LinearAttention(d, 1).to(dtype)
    reads_x = torch.diag((torch.arange(d) < dx).to(dtype))
    with torch.no_grad():
        layer.qkv.weight.copy_(torch.cat([reads_x, reads_x, torch.eye(d, dtype=dtype) - reads_x]))
        layer.out.weight.copy_(lr / n * torch.eye(d, dtype=dtype))
    return layer


def gd_block(dx: int, dy: int, lr: float, n: int, *, hidden: int, seed: int = 0,
             dtype: torch.dtype = torch.float64) -> Block:
    """The construction's layer in a residual block with a seeded random ReLU MLP (first matrix
    ``W`` ``(hidden, dx + dy)``): its network input at the query is ``(x_q, W_1 x_q)``."""
    d = dx + dy
    with seeded(seed):
        network = MLP(d, hidden)
    return Block(gd_layer(dx, dy, lr, n, dtype=dtype), network, get_composition("residual"), d).to(dtype)


def gd_tokens(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Context ``(B, N, dx + dy)`` of the examples ``x`` ``(B, N, dx)``, ``y`` ``(B, N, dy)``, and
    the query token ``(x_q, 0)`` ``(B, dx + dy)`` of ``x_query`` ``(B, dx)``."""
    context = torch.cat([x, y], dim=-1)
    query = torch.cat([x_query, x_query.new_zeros(x_query.shape[0], y.shape[-1])], dim=-1)
    return context, query
