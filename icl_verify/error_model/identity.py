"""The identity's tolerance (docs/error-model.md): the named terms of :mod:`.terms` on each side's
map inputs, propagated through the map's Jacobian (:mod:`.jacobian`), plus the output's own term,
then the ordered refinements: shared entries, additive entries, the secant."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from . import secant as secant_step, terms
from .jacobian import propagated_variance
from .primitives import TAIL, entry_norm, wide
from .refinements import additive_entries, additive_scales, shared_entries
from .scales import sum_scale
from .secant import Side, reaches

if TYPE_CHECKING:
    from ..blocks import ContextualBlock
    from ..updates import ImplicitUpdate

RATIO_TERMS = frozenset({"gain", "secant"})
"""Entries of :func:`identity_bound`'s terms that are ratios or flags, not lengths: reports never
divide them by an output's norm."""


def identity_bound(block: ContextualBlock, update: ImplicitUpdate, hs: Sequence[torch.Tensor],
                   s: torch.Tensor | None, *, entry_dims: int,
                   target_side: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None):
    """The identity's tolerance ``TAIL sqrt(V)`` (docs/error-model.md, "Propagation") and its terms.

    ``hs``: the updated side's pre-activations ``(*E, m_k)``; ``s``: its bypass ``(*E, d_out)`` or None;
    ``target_side``: the target side's ``(hs_t, y_t)`` as computed, or None (no shared entries,
    no secant on the target side). Returns ``(tolerance (*E,), terms, y)``: ``terms`` maps
    ``rounding_target``, ``rounding_updated`` (``TAIL`` standard deviations of each side's rounding;
    the tolerance is their root sum of squares), ``gain`` and ``secant`` (a flag) to ``(*E,)``
    tensors; ``y`` ``(*E, d_out)`` is the updated side's output ``output(hs, s)``."""
    target, reference = update.target, update.reference
    dt, dev = hs[0].dtype, hs[0].device
    idn = terms.Identity(dt, dev, target.z.shape[-1], max(w.shape[0] for w, _ in block.first_layers()),
                         reference.z, update.right)
    shared = shared_entries(hs, target_side, entry_dims)  # (*E,) mask or None
    side_t, side_u = _pre_activation_sides(block, update, idn, hs, target_side, shared, entry_dims)
    inputs = list(hs)
    if s is not None:
        r_t, r_u = terms.bypass(idn, target.s, reference.s, s)
        side_t.scales.append(r_t)
        side_u.scales.append(r_u)
        inputs.append(s)
    k = len(hs)
    fn = (lambda *a: block.output(list(a[:k]), a[k])) if s is not None else \
        (lambda *a: block.output(list(a), None))
    # the two sides round independently: one propagation (one probe) serves both sets of scales
    (var_t, var_u), y_u = propagated_variance(
        fn, inputs, [side_t.scales, side_u.scales], entry_dims=entry_dims,
        width=None if target_side is None else target_side[1].flatten(entry_dims).shape[-1])
    y = wide(y_u)
    gain = _gain(side_t.scales, side_u.scales, var_t, var_u, entry_dims)
    out = terms.output(idn, y, s, entry_dims)
    out_sq = out.square()
    side_t.rounding = TAIL * (var_t + out_sq).sqrt()
    side_u.rounding = TAIL * (var_u + out_sq).sqrt()
    if shared is not None and s is not None:
        _additive_refinement(block, idn, update, hs, s, y, target_side, shared, side_t, side_u, entry_dims)
    side_u.y, side_u.s = y_u, s
    sides = [side_u] + ([] if target_side is None else [side_t])
    for side in sides:
        side.scales = side.scales[:k]
    rounding_u, *rest = secant_step.secant(fn, sides, entry_dims, TAIL * out)
    rounding_t = rest[0] if rest else side_t.rounding
    flagged = torch.stack([side.flag for side in sides]).any(0)
    return torch.hypot(rounding_t, rounding_u), {
        "rounding_target": rounding_t, "rounding_updated": rounding_u, "gain": gain,
        "secant": flagged.to(gain.dtype)}, y_u


def _pre_activation_sides(block, update, idn: terms.Identity, hs, target_side, shared, entry_dims: int):
    """The target and updated :class:`~.secant.Side` with the pre-activation scales of every first
    layer (:data:`~.terms.PRE_ACTIVATION_TERMS`), zero at shared entries, their distances to the
    map's kinks and the entries where a scale reaches one."""
    index = shared.nonzero(as_tuple=True) if shared is not None and shared.any() else None
    kinks_u = block.kinks(hs)  # distances to the map's kinks where they are not at 0
    kinks_t = {} if target_side is None else block.kinks(target_side[0])
    side_t = Side(None if target_side is None else target_side[0], update.target.s,
                  None if target_side is None else target_side[1], [], None, None, None, [])
    side_u = Side(hs, None, None, [], None, None, update.left, [])
    flags_t, flags_u = [], []
    for i, ((w, b), lf, h) in enumerate(zip(block.first_layers(), update.left, hs)):
        layer = _first_layer(w, b, lf, h, update)
        acc_t, acc_u = terms.pre_activation_scales(idn, layer, terms.PRE_ACTIVATION_TERMS)
        if index is not None:  # bitwise the same pre-activations: the same rounding on both sides
            acc_t[index] = 0
            acc_u[index] = 0
        side_t.scales.append(acc_t)
        side_u.scales.append(acc_u)
        side_u.distance.append(kinks_u.get(i, layer.h_abs))
        flags_u.append(reaches(acc_u, side_u.distance[-1], entry_dims))
        if target_side is not None:
            side_t.distance.append(kinks_t.get(i, wide(target_side[0][i]).abs()))
            flags_t.append(reaches(acc_t, side_t.distance[-1], entry_dims))
    side_u.flag = torch.stack(flags_u).any(0)
    side_t.flag = torch.stack(flags_t).any(0) if flags_t else None
    return side_t, side_u


def _first_layer(w, b, lf, h, update) -> terms.FirstLayer:
    """One first layer's :class:`~.terms.FirstLayer`. ``W z_t = W z_r + left = h - b`` in exact
    arithmetic, so the partial-sum scale needs no new product: ``q = sqrt(q_r^2 + q_d^2)`` from one."""
    wz_r = h - lf if b is None else h - b - lf
    q = sum_scale(w, (update.reference.z, update.target.z - update.reference.z), (wz_r, lf))
    return terms.FirstLayer(w, b, h, lf, q, wide(h).abs())


def _gain(scales_t, scales_u, var_t, var_u, entry_dims: int) -> torch.Tensor:
    """``sqrt(V_t + V_u) / ||(r_t, r_u)||`` ``(*E,)``: how much the map amplifies its inputs' rounding."""
    n_t, n_u = entry_norm(*scales_t, entry_dims=entry_dims), entry_norm(*scales_u, entry_dims=entry_dims)
    gain_sq = (var_t + var_u) / torch.hypot(n_t, n_u).square().clamp_min(torch.finfo(var_t.dtype).tiny)
    return gain_sq.sqrt()


def _additive_refinement(block, idn, update, hs, s, y, target_side, shared, side_t: Side, side_u: Side,
                         entry_dims: int) -> None:
    """At the additive entries (:func:`~.refinements.additive_entries`) each side's rounding becomes
    :func:`~.refinements.additive_scales`'s."""
    target = update.target
    additive = additive_entries(block, hs, s, y, target_side[1], target.s, shared)
    add_t, add_u = additive_scales(idn.u, target.s, update.reference.s, s, target_side[1], y, entry_dims)
    side_t.rounding = torch.where(additive, add_t, side_t.rounding)
    side_u.rounding = torch.where(additive, add_u, side_u.rounding)
