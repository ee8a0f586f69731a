"""The named terms of an identity's tolerance (docs/error-model.md, one section each, same order).

A pre-activation term takes the :class:`Identity` and one :class:`FirstLayer` and returns a
:class:`Charge`: the standard-deviation scale it adds to each pre-activation of that layer, per
side (target, updated), either as a coefficient of a shared basis tensor (``q`` or ``|h|``) or as
a tensor of its own. :data:`PRE_ACTIVATION_TERMS` lists them in the order they are summed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from .primitives import entry_norm, rho, underflow, unit_roundoff, wide
from .scales import left_factor_scale

PRE_ACTIVATION_EXTRA_TERMS = 3
"""Additions past the ``d`` products of a pre-activation: the bias, the left part and its product
(``W z_r + b + left c``): ``inner_products`` charges ``rho(d + 3)``."""

NETWORK_EXTRA_TERMS = 2
"""Terms past the ``m`` products of the network's widest sum (its bias and the bypass):
``network`` charges ``rho(m + 2)``."""

NETWORK_STORED_ROUNDINGS = 2
"""Stored roundings of the network, as a backward perturbation: its input's and its output's."""

OUTPUT_EXTRA_TERMS = 2
"""Terms past the ``d_out`` components of a post-norm's statistics or the last product: ``output``
charges ``rho(d_out + 2)``."""

OUTPUT_STORED_ROUNDINGS = 2
"""Stored roundings of the network's part of the output (its last product and the bypass addition)."""

UPDATED_UNDERFLOW_RESULTS = 3
"""Products and stored sums of the updated side's pre-activation that may land among the
subnormals: ``W z_r``, ``left`` and ``left (right . z_r)``."""


class Charge(NamedTuple):
    """One term's scale on one layer's pre-activations: ``target`` and ``updated`` are coefficients
    of the basis tensor named ``basis`` (``"q"``, ``"h"``), or, with ``basis`` None, tensors
    ``(*E, m)`` / ``(*E, 1)`` or floats added as they are; None: nothing on that side."""
    basis: str | None
    target: float | torch.Tensor | None
    updated: float | torch.Tensor | None


@dataclass(frozen=True)
class Identity:
    """What every term reads of one identity: the dtype and device of the map's inputs, its unit
    roundoff ``u``, the width ``d`` of ``z``, the widest first matrix ``m``, ``eta``
    (:func:`~.primitives.underflow`), the reference ``z_r`` ``(*E, d)`` and ``right`` ``(*E, d)``."""
    dtype: torch.dtype
    device: torch.device
    d: int
    m: int
    z_r: torch.Tensor
    right: torch.Tensor

    @property
    def u(self) -> float:
        return unit_roundoff(self.dtype)

    @property
    def eta(self) -> float:
        return underflow(self.dtype)

    @functools.cached_property
    def c_left(self) -> torch.Tensor:
        """``c_left`` ``(*E, 1)`` (:func:`~.scales.left_factor_scale`)."""
        return left_factor_scale(self.right, self.z_r, self.dtype, self.device)

    @functools.cached_property
    def z_r_l1(self) -> torch.Tensor:
        """``eta ||z_r||_1`` ``(*E, 1)``."""
        return self.eta * torch.linalg.vector_norm(wide(self.z_r), ord=1, dim=-1, keepdim=True)


class FirstLayer(NamedTuple):
    """One first matrix ``W`` ``(m_k, d)`` with bias ``b`` (or None), the updated side's
    pre-activation ``h`` and left factor ``left`` ``(*E, m_k)``, and their bases in float32 at
    least: ``q`` the partial-sum scale (:func:`~.scales.sum_scale`) and ``h_abs = |h|``."""
    w: torch.Tensor
    b: torch.Tensor | None
    h: torch.Tensor
    left: torch.Tensor
    q: torch.Tensor
    h_abs: torch.Tensor


def inner_products(idn: Identity, layer: FirstLayer) -> Charge:
    """``rho(d + 3) q``: the accumulation of ``W z``. The target's one product has partial sums of
    scale ``q(W, z_t) <= q_r + q_d <= sqrt(2) q`` (Cauchy-Schwarz); the updated side's two products
    ``W z_r`` and ``W (z_t - z_r)`` round independently: ``rho sqrt(q_r^2 + q_d^2) = rho q``."""
    r_in = rho(idn.d + PRE_ACTIVATION_EXTRA_TERMS, idn.dtype, idn.device)
    return Charge("q", r_in * 2 ** 0.5, r_in)


def operand_storage(idn: Identity, layer: FirstLayer) -> Charge:
    """``u q`` on the updated side: the one rounding of every operand entry of its products (of
    ``z_t - z_r``, and of ``W + dW`` where it is formed)."""
    return Charge("q", 0.0, idn.u)


def left_factor(idn: Identity, layer: FirstLayer) -> Charge:
    """``c_left |left|`` on the updated side (:func:`~.scales.left_factor_scale`): the rounding of
    ``right`` and of ``right . z_r``, which reaches the pre-activation multiplied by ``left``."""
    return Charge(None, None, wide(layer.left).abs().mul_(idn.c_left))


def stored_pre_activation(idn: Identity, layer: FirstLayer) -> Charge:
    """``u |h|`` on the target (the stored ``W z_t + b``), ``2u |h|`` on the updated side (the stored
    ``W z_r`` and the addition of the left part)."""
    return Charge("h", idn.u, 2 * idn.u)


def network(idn: Identity, layer: FirstLayer) -> Charge:
    """``(rho(m + 2) + 2u) |h|`` on each side: the network's own rounding (products, pointwise
    functions, norms) as a backward perturbation of its input."""
    r_map = rho(idn.m + NETWORK_EXTRA_TERMS, idn.dtype, idn.device) + NETWORK_STORED_ROUNDINGS * idn.u
    return Charge("h", r_map, r_map)


def bias(idn: Identity, layer: FirstLayer) -> Charge:
    """``u |b|`` on each side: the bias's addition."""
    if layer.b is None:
        return Charge(None, None, None)
    ub = idn.u * wide(layer.b).abs()
    return Charge(None, ub, ub)


def pre_activation_underflow(idn: Identity, layer: FirstLayer) -> Charge:
    """Gradual underflow (float16 only): ``eta`` on the target's stored ``W z_t``; on the updated
    side ``eta ||z_r||_1`` (the products ``left_i right_j`` of ``W + dW``) and ``3 eta``."""
    eta = idn.eta
    if not eta:
        return Charge(None, None, None)
    return Charge(None, eta, idn.z_r_l1 + UPDATED_UNDERFLOW_RESULTS * eta)


Term = Callable[[Identity, FirstLayer], Charge]

PRE_ACTIVATION_TERMS: tuple[Term, ...] = (inner_products, operand_storage, left_factor, stored_pre_activation,
                                          network, bias, pre_activation_underflow)
"""The pre-activation terms, in the order :func:`pre_activation_scales` sums them."""


def pre_activation_scales(idn: Identity, layer: FirstLayer,
                          terms: tuple[Term, ...] = PRE_ACTIVATION_TERMS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r_t, r_u)`` ``(*E, m_k)``: the sum of ``terms`` on each side, in order; consecutive
    charges on the same basis add their coefficients first (one product per basis)."""
    charges = [term(idn, layer) for term in terms]
    return tuple(_assemble([(c.basis, c[side]) for c in charges], layer) for side in (1, 2))


def _assemble(parts, layer: FirstLayer) -> torch.Tensor:
    bases = {"q": layer.q, "h": layer.h_abs}
    acc, i = None, 0
    while i < len(parts):
        basis, value = parts[i]
        i += 1
        if basis is None:
            if value is not None:
                acc = value if acc is None else acc + value
            continue
        while i < len(parts) and parts[i][0] == basis:  # one product per run of the same basis
            value, i = value + parts[i][1], i + 1
        acc = bases[basis] * value if acc is None else torch.add(acc, bases[basis], alpha=value)
    return acc


def bypass(idn: Identity, s_t: torch.Tensor, s_r: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r_t, r_u)`` of the bypass ``(*E, d_out)``: target ``u |s_t| + u |s|``, updated
    ``2u (|s_t| + |s_t - s_r|) + u |s|`` (the shift, its addition and the addition ``s + f``)."""
    u = idn.u
    return u * s_t.abs() + u * s.abs(), 2 * u * (s_t.abs() + (s_t - s_r).abs()) + u * s.abs()


def output(idn: Identity, y: torch.Tensor, s: torch.Tensor | None, entry_dims: int) -> torch.Tensor:
    """``u ||y|| + (rho(d_out + 2) + 2u) ||y - s||`` ``(*E,)``: the output's last rounding and the
    statistics of a post-norm or the last product, which touch only the part of ``y`` that is not
    the bypass. ``y`` in float32 at least."""
    u = idn.u
    out = u * entry_norm(y, entry_dims=entry_dims)
    r_out = rho(y.shape[-1] + OUTPUT_EXTRA_TERMS, idn.dtype, idn.device) + OUTPUT_STORED_ROUNDINGS * u
    return out + r_out * entry_norm(y if s is None else y - wide(s), entry_dims=entry_dims)
