"""Elementwise worst-case bounds of the matrix claims (docs/error-model.md, "Matrix claims"): per
first matrix ``(..., m, d)`` in float32 at least, with ``c(k, n)`` of
:func:`~.primitives.chain_bound`; the claims compare Frobenius norms."""
from __future__ import annotations

import torch

from .primitives import abs_matvec, chain_bound, entry_norm, half_subnormal_spacing, unit_roundoff, wide

INCREMENT_STORED = 3
"""Stored roundings of an increment's left chain (``c(3, d)``): ``z_{i+1} - z_r``, its product, its storage."""

INCREMENT_PRODUCTS = 3
"""Rounded products (and stored left factors) of an increment: ``W_i``'s, ``W_{i+1}``'s, the formula's."""

END_STORED = 2
"""Stored roundings of ``dW_n`` and ``dW(C)``'s left chain past their common ``fl(z_n - z_r)``."""

END_PRODUCTS = 2
"""Rounded products of the telescoping claim's end: ``dW_n``'s and ``dW(C)``'s."""

RIGHT_NORM_ROUNDINGS = 5
"""Roundings of ``||z_r||`` as ``m ||z_r / m||``: the division, the squares and their sum, the square
root and its storage (``c(5, d)``); its product by ``m`` and the two divisions add ``(1 + u)^2``."""

SGD_PRODUCTS = 3
"""Rounded products of an SGD step's chain: ``W (z_i - z_{i+1})`` times ``z_x``, by ``lr``, and ``lr`` times
the gradient."""

LEARNING_RATE_STORED = 2
"""Stored roundings of the learning rate's chain ``c(2, d)``: the sum of squares' storage and its inverse."""


def right_factor_bound(d: int, dtype: torch.dtype, device) -> float:
    """``c_r = (1+u)^2 / (1 - c(5, d))^2 - 1``: the relative rounding of each element of the computed
    ``right = z_r / ||z_r|| / ||z_r||``."""
    return (1 + unit_roundoff(dtype)) ** 2 / (1 - chain_bound(RIGHT_NORM_ROUNDINGS, d, dtype, device)) ** 2 - 1


def step_spread(w: torch.Tensor, upd) -> torch.Tensor:
    """``S_i = |W| (|z_{i+1} - z_r| + |z_i - z_r| + |z_{i+1} - z_i|) |right_{i+1}|^T``: ``(B, n, m, d_z)``,
    the scale of the rounding of the left factors of two consecutive prefixes and of their difference."""
    z, zr, w = wide(upd.target.z), wide(upd.reference.z), wide(w)
    spread = (abs_matvec(w, z[:, 1:] - zr[:, 1:]) + abs_matvec(w, z[:, :-1] - zr[:, :-1])
              + abs_matvec(w, z[:, 1:] - z[:, :-1]))
    return spread[..., :, None] * wide(upd.right[:, 1:]).abs()[..., None, :]


def matrix_underflow(left_sum: torch.Tensor, right_sum: torch.Tensor, products: float,
                     ref_norm: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gradual underflow per element of the ``left right^T`` chains: ``eta (right_sum + products +
    left_sum (1 + 1/||z_r||))``; ``right_sum`` the sum of ``|right|`` over the stored left factors,
    ``products`` the number of rounded products, ``left_sum`` the sum of ``|left|`` over the right
    factors (two quotients each). Shapes ``(..., m, 1)``, ``(..., 1, d)``, ``(...)`` -> ``(..., m, d)``."""
    eta = half_subnormal_spacing(dtype)
    inv = (1 + 1 / wide(ref_norm))[..., None, None]
    return eta * (right_sum + products + left_sum * inv)


def _weights_rounding(u: float, w, dw) -> torch.Tensor:
    """``u (2|W| + |dW_i| + |dW_{i+1}|)``: the storage of ``W_i = W + dW_i`` and ``W_{i+1}``."""
    return u * (2 * wide(w).abs() + wide(dw[:, :-1]).abs() + wide(dw[:, 1:]).abs())


def increment_bounds(block, upd, diffs) -> list[torch.Tensor]:
    """Per first matrix: ``c(3, d) S_i + u (2|W| + |dW_i| + |dW_{i+1}|) + u/(1-u) |W_{i+1} - W_i|``
    plus underflow, for the increments ``diffs`` ``(B, n, m, d)`` of the prefix updates ``upd``."""
    dt, dev = upd.right.dtype, upd.right.device
    c3, u = chain_bound(INCREMENT_STORED, upd.target.z.shape[-1], dt, dev), unit_roundoff(dt)
    right = wide(upd.right[:, 1:]).abs()[..., None, :]
    ref_norm = entry_norm(wide(upd.reference.z[:, 1:]), entry_dims=2)
    dz = wide(upd.target.z[:, 1:] - upd.target.z[:, :-1])
    return [c3 * step_spread(w, upd) + _weights_rounding(u, w, dw) + u / (1 - u) * wide(a).abs()
            + matrix_underflow((wide(lf[:, :-1]).abs() + wide(lf[:, 1:]).abs() + abs_matvec(wide(w), dz))[..., None],
                               INCREMENT_PRODUCTS * right, INCREMENT_PRODUCTS, ref_norm, dt)
            for w, a, dw, lf in zip(block.first_weights(), diffs, upd.dense(), upd.left)]


def telescoping_bounds(block, upd, full, diffs, n: int) -> list[torch.Tensor]:
    """Per first matrix: ``(c(1, n-1) + u/(1-u)) sum_i |W_{i+1} - W_i| + u/(1-u) |W_n|
    + c_end |W| |fl(z_n - z_r)| |right|^T`` plus underflow; ``c_end = 2 c(2, d)`` where the right
    factors of ``dW_n`` and ``dW(C)`` (``full``) agree bit for bit, else ``2 ((1 + c(2, d)) (1 + c_r)
    / (1 - c_r) - 1)``; ``n`` the context's length."""
    last = upd[:, -1]
    dt, dev = full.right.dtype, full.right.device
    u, d = unit_roundoff(dt), last.target.z.shape[-1]
    c_sum, c_r = chain_bound(1, n - 1, dt, dev), right_factor_bound(d, dt, dev)
    c2 = chain_bound(END_STORED, d, dt, dev)
    same_right = (last.right == full.right).all(-1)[..., None, None]
    c_end = torch.where(same_right, 2 * c2, 2 * ((1 + c2) * (1 + c_r) / (1 - c_r) - 1))
    dz = wide(last.target.z - last.reference.z)
    right = wide(last.right).abs()[..., None, :]
    ref_norm = entry_norm(wide(last.reference.z), entry_dims=1)
    return [(c_sum + u / (1 - u)) * wide(a).abs().sum(1) + u / (1 - u) * wide(wn).abs()
            + c_end * abs_matvec(wide(w), dz)[..., :, None] * right
            + matrix_underflow((wide(ln).abs() + wide(lc).abs())[..., None], END_PRODUCTS * right, END_PRODUCTS,
                               ref_norm, dt)
            for w, a, wn, ln, lc in zip(block.first_weights(), diffs, last.weights(block), last.left, full.left)]


def sgd_bounds(block, upd, steps) -> list[torch.Tensor]:
    """Per first matrix: ``c_S S_i + u (2|W| + |dW_i| + |dW_{i+1}|) + u/(1-u) |step_i|`` plus underflow,
    ``c_S = max(c(3, d), (c_r + c_P) / (1 - c_r))``, ``c_P = (1 + c_l)(1 + c(3, d))(1 + u) - 1`` (of
    ``h D_i``), ``c_l = (1+u) / (1 - c(2, d)) - 1`` (of the learning rate ``h``)."""
    dt, dev, d = upd.right.dtype, upd.right.device, upd.target.z.shape[-1]
    u, c3 = unit_roundoff(dt), chain_bound(INCREMENT_STORED, d, dt, dev)
    c_r = right_factor_bound(d, dt, dev)
    c_l = (1 + u) / (1 - chain_bound(LEARNING_RATE_STORED, d, dt, dev)) - 1
    c_p = (1 + c_l) * (1 + c3) * (1 + u) - 1
    c_s = max(c3, (c_r + c_p) / (1 - c_r))
    z_x = wide(upd.reference.z[:, :-1])
    lr = 1 / z_x.square().sum(-1)[..., None, None]
    right = wide(upd.right[:, :-1]).abs()[..., None, :] + wide(upd.right[:, 1:]).abs()[..., None, :]
    ref_norm = entry_norm(wide(upd.reference.z[:, 1:]), entry_dims=2)
    # dW_i's and dW_{i+1}'s factors and products, and the step's: the stored W (z_i - z_{i+1})
    # times z_x and lr, its product by z_x times lr, and lr times the gradient
    return [c_s * step_spread(w, upd) + _weights_rounding(u, w, dw) + u / (1 - u) * wide(step).abs()
            + matrix_underflow((wide(lf[:, :-1]).abs() + wide(lf[:, 1:]).abs())[..., None],
                               right + lr * (z_x.abs()[..., None, :] + 1), SGD_PRODUCTS, ref_norm, dt)
            for w, step, dw, lf in zip(block.first_weights(), steps, upd.dense(), upd.left)]
