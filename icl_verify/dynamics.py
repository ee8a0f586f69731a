"""Implicit dynamics (docs/theory.md §3): the context consumed token by token.

With ``z_i`` the network input of the query after ``c_1..c_i`` (``z_0 = z_x``, the query alone)
and ``W_i = W + dW(c_1..c_i)``:

- telescoping: ``W_{i+1} - W_i = (W (z_{i+1} - z_i)) z_x^T / ||z_x||^2`` and the increments sum
  to ``dW(C)``;
- SGD form: ``W_{i+1} = W_i - h grad L_i(W_i)`` with ``h = 1/||z_x||^2`` and the linear loss
  ``L_i(W') = trace(D_i^T W')``, ``D_i = W (z_i - z_{i+1}) z_x^T``; the gradient is taken with
  autograd.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ContextualBlock, Decomposition
from .validation import check_finite, check_tensor, module_dtype
from .errors import DegenerateReferenceError, EmptyContextError, ShapeError, where
from .updates import ImplicitUpdate, general_update, grad_only_if_inputs_ask, query_alone


def check_prefix_inputs(module: nn.Module, context: torch.Tensor, query: torch.Tensor,
                        block_index: int | None = None) -> None:
    """Typed errors for prefix dynamics: ``context`` ``(B, n, d)`` with ``n >= 1`` and ``query``
    ``(B, d)``, finite, in the module's dtype."""
    dtype = module_dtype(module)
    check_tensor(query, "query", ndim=2, dtype=dtype, block=block_index)
    check_tensor(context, "context", ndim=3, dtype=dtype, width=query.shape[-1], block=block_index)
    if context.shape[1] == 0:
        raise EmptyContextError(f"prefix dynamics need a context of at least one token{where(block_index)}")
    if context.shape[0] != query.shape[0]:
        raise ShapeError(f"context batch {context.shape[0]} and query batch {query.shape[0]} differ")


def prefix_targets(block: ContextualBlock, context: torch.Tensor, queries: torch.Tensor) -> Decomposition:
    """Decomposition of ``queries[:, i]`` placed after ``c_1..c_i``, ``i = 0..n``: leading dims
    ``(B, n+1)``. ``queries`` is ``(B, n+1, d)`` (one copy per prefix). Generic method: one
    forward pass per prefix."""
    decs = [block.decompose(torch.cat([context[:, :i], queries[:, i:i + 1]], dim=1)).at(-1)
            for i in range(context.shape[1] + 1)]
    z = torch.stack([d.z for d in decs], dim=1)
    s = None if decs[0].s is None else torch.stack([d.s for d in decs], dim=1)
    return Decomposition(z, s)


@grad_only_if_inputs_ask
def prefix_updates(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
                   block_index: int | None = None) -> ImplicitUpdate:
    """``dW(c_1..c_i)`` for ``i = 0..n`` against the query alone: leading dims ``(B, n+1)``.

    ``context`` ``(B, n, d)`` with ``n >= 1``; ``query`` ``(B, d)``. Entry ``i = 0`` is zero.
    Generic method (one forward pass per prefix); :mod:`icl_verify.prefix_cache` gives the same at the
    cost of one.
    """
    check_prefix_inputs(block, context, query, block_index)
    target = prefix_targets(block, context, query[:, None].expand(-1, context.shape[1] + 1, -1))
    return general_update(block.first_weights(), target, query_alone(block, query, target),
                          block=block_index, positions=torch.arange(target.z.shape[1])[None, :])


def prefix_weights(block: ContextualBlock, updates: ImplicitUpdate) -> tuple[torch.Tensor, ...]:
    """``W_0..W_n`` per first matrix: ``(B, n+1, m_k, d_z)``."""
    return updates.weights(block)


def increments(block: ContextualBlock, updates: ImplicitUpdate) -> tuple[torch.Tensor, ...]:
    """``W_{i+1} - W_i`` from the prefix weights: ``(B, n, m_k, d_z)`` per first matrix."""
    return tuple(w[:, 1:] - w[:, :-1] for w in prefix_weights(block, updates))


def increment_formula(block: ContextualBlock, updates: ImplicitUpdate) -> tuple[torch.Tensor, ...]:
    """``(W (z_{i+1} - z_i)) z_x^T / ||z_x||^2``: ``(B, n, m_k, d_z)`` per first matrix."""
    dz = updates.target.z[:, 1:] - updates.target.z[:, :-1]
    right = updates.right[:, 1:]
    return tuple((dz @ w.T)[..., :, None] * right[..., None, :] for w in block.first_weights())


def increment_norms(updates: ImplicitUpdate) -> torch.Tensor:
    """``||W_{i+1} - W_i||_F`` for ``i = 0..n-1`` per first matrix: ``(B, n, K)``, from the
    factors (``||u_{i+1} - u_i|| ||z_x|| / ||z_x||^2``)."""
    r = updates.right[:, 1:].norm(dim=-1)
    return torch.stack([(u[:, 1:] - u[:, :-1]).norm(dim=-1) * r for u in updates.left], dim=-1)


def linear_loss(weight: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``L(W') = trace(D^T W')`` summed over leading dims."""
    return (direction * weight).sum()


def sgd_steps(block: ContextualBlock, updates: ImplicitUpdate) -> tuple[torch.Tensor, ...]:
    """One SGD step from each ``W_i``, ``i = 0..n-1``: ``W_i - h grad L_i(W_i)`` with
    ``h = 1/||z_x||^2`` and ``D_i = W (z_i - z_{i+1}) z_x^T``, the gradient by autograd.
    Returns the predicted ``W_{i+1}``, ``(B, n, m_k, d_z)`` per first matrix."""
    z = updates.target.z.detach()
    z_x = updates.reference.z[:, :-1].detach()
    sq = (z_x * z_x).sum(-1)[..., None, None]
    check_finite(sq, f"||z_x||^2 of the learning rate (overflow in {sq.dtype}?)")
    lr = 1.0 / sq
    check_finite(lr, f"learning rate 1/||z_x||^2 (overflow in {lr.dtype}?)")
    if bool((lr < torch.finfo(lr.dtype).tiny).any()):  # subnormal: relative rounding lost
        raise DegenerateReferenceError(f"learning rate 1/||z_x||^2 underflows {lr.dtype} "
                                       f"(min {float(lr.min()):.3g}): z_x is too large for this dtype")
    out = []
    for w, w_all in zip(block.first_weights(), prefix_weights(block, updates)):
        w_i = w_all[:, :-1].detach().requires_grad_(True)
        direction = ((z[:, :-1] - z[:, 1:]) @ w.detach().T)[..., :, None] * z_x[..., None, :]
        (grad,) = torch.autograd.grad(linear_loss(w_i, direction), w_i)
        out.append(w_i.detach() - lr * grad)
    return tuple(out)
