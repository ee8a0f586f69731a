"""The scales the pre-activation terms multiply (docs/error-model.md, "inner_products" and
"left_factor"): the partial-sum scale ``q`` of ``W z`` and the relative rounding ``c_left`` of the
left factor's path."""
from __future__ import annotations

from typing import Sequence

import torch

from .primitives import rho, unit_roundoff, wide

TERM_ROUNDINGS = 5
"""Roundings per term of ``right . z_r`` in the dense path, each ``u K``: the two quotients of
``right = z_r / n / n``, the product ``left_i right_j``, the storage of ``W + dW`` and the product by
``z_r,j``."""

NORM_ROUNDINGS = 5
"""Roundings of ``1 / n^2`` that scale with ``zeta``: the quotients ``z_r / m`` and the squares
(``sqrt(5) u sqrt(zeta^2 - 1)``, twice), the storage of the sum of squares."""

FIXED_ROUNDINGS = 7
"""Roundings of ``u`` each, whatever ``z_r``: the storage of ``c``, twice the square root's and the
product by ``m``'s (of ``n``), the storage of ``left`` and its product by ``c``."""


def sum_scale(w: torch.Tensor, zs: Sequence[torch.Tensor], wzs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum_i q(W, z_i)^2)`` ``(..., m)`` with ``q(W, z) = sqrt((W∘W)(z∘z) + (W z)^2)``, from ``W``
    ``(m, d)``, vectors ``zs[i]`` ``(..., d)`` and their products ``wzs[i] = W z_i`` ``(..., m)``: the scale
    of the partial sums of ``W z`` (docs/error-model.md, "The sum of one inner product"), one matrix
    product whatever the number of vectors. For float64 values the product runs in float32 on
    operands divided by their largest entry (relative error below ``d u_32``, immaterial for a scale)."""
    sq = sum(wide(z).square() for z in zs)
    wz2 = wide(wzs[0]).square()
    for wz in wzs[1:]:
        wz2.addcmul_(wz, wz)
    lead, sq = sq.shape[:-1], sq.flatten(0, -2)
    if w.dtype != torch.float64:
        w2 = wide(w.detach()).square()
        return torch.addmm(wz2.flatten(0, -2), sq, w2.T).reshape(*lead, w.shape[0]).sqrt_()
    m_w = torch.linalg.vector_norm(w.detach(), ord=float("inf")).clamp_min(torch.finfo(w.dtype).tiny)
    m_z = sq.amax(-1, keepdim=True)
    m_z = torch.where(m_z > 0, m_z, torch.ones_like(m_z))
    prod = (sq / m_z).float() @ (w.detach() / m_w).float().square_().T
    return wz2.addcmul_(prod.to(wz2.dtype).reshape(*lead, w.shape[0]), (m_z * m_w ** 2).reshape(*lead, 1)).sqrt_()


def left_factor_scale(right: torch.Tensor, z_r: torch.Tensor, dtype: torch.dtype,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``c_left`` ``(*E, 1)``: the standard deviation of the rounding the updated side adds to a
    pre-activation through its left factor, relative to ``|left|``; ``right``, ``z_r`` ``(*E, d)``.
    ``c_left^2 = rho(d)^2 (K^2 + 1 + zeta^2) + u^2 (5 K^2 + 5 zeta^2 + 7)`` with ``K = ||right∘z_r||``
    and ``zeta^2 = 1 + ||z_r∘z_r||^2 / ||z_r||^4`` (docs/error-model.md, "left_factor")."""
    zr, rt = wide(z_r), wide(right)
    x2 = (zr / zr.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(zr.dtype).tiny)).square()
    zeta2 = 1 + x2.square().sum(-1, keepdim=True) / x2.sum(-1, keepdim=True).square().clamp_min(1)
    k2 = (rt * zr).square().sum(-1, keepdim=True)
    r, u = rho(z_r.shape[-1], dtype, device), unit_roundoff(dtype)
    return (r * r * (k2 + 1 + zeta2)
            + u * u * (TERM_ROUNDINGS * k2 + NORM_ROUNDINGS * zeta2 + FIXED_ROUNDINGS)).sqrt()

