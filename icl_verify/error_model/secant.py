"""The secant refinement (docs/error-model.md, "secant"): where ``TAIL`` modelled roundings of a
pre-activation reach its distance to a kink of the map (catastrophic cancellation, a sign or a
kink crossed, a top-k routing tie), a side's rounding is raised to the map's measured change over
that reach."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import NonFiniteError
from .primitives import TAIL, entry_norm, wide

VERTEX_BITS = 4
"""The secant visits every sign combination of up to this many reaching components of an entry:
at most ``2^4 = 16`` evaluations of the map per flagged entry and side."""

DIRECTION_SEED = 1
"""Seed of the fixed Rademacher direction ``xi`` of a side without a direction of its own."""


@dataclass
class Side:
    """One side of an identity: the map's inputs ``hs`` (each ``(*E, m_k)``) and ``s`` (or None), its
    output ``y``, the modelled scales of ``hs`` (same shapes), the ``distance`` of each component of
    ``hs`` to the map's nearest kink (same shapes), ``flag`` ``(*E,)`` the entries where a scale
    reaches its distance (:func:`reaches`), the ``direction`` of the side's common rounding
    (tensors shaped like ``hs``) or None, and its propagated ``rounding`` ``(*E,)``."""
    hs: Sequence[torch.Tensor]
    s: torch.Tensor | None
    y: torch.Tensor
    scales: Sequence[torch.Tensor]
    rounding: torch.Tensor
    flag: torch.Tensor
    direction: Sequence[torch.Tensor] | None
    distance: Sequence[torch.Tensor]


def reaches(scale: torch.Tensor, distance: torch.Tensor, entry_dims: int) -> torch.Tensor:
    """``(*E,)``: the entries where ``TAIL`` times ``scale`` of some pre-activation reaches its
    ``distance`` to the map's nearest kink, both ``(*E, m)``."""
    return torch.sub(distance, scale, alpha=TAIL).flatten(entry_dims).amin(-1) < 0


class _Moves:
    """The moved inputs of one side's flagged entries: ``fl`` the flagged entries (over the
    flattened ``E``), ``owner`` the entry of each move, ``corners`` the number of corner moves
    (first) and ``pairs`` the number of single-component moves (each to both ends, last)."""

    def __init__(self, side: Side, fl: torch.Tensor, entry_dims: int):
        n = side.flag.numel()
        r = TAIL * torch.cat([_rows(sc, fl, n) for sc in side.scales], -1)  # (len(fl), M)
        xi = _direction(side, fl, r)
        step = r * xi
        steps, owner = [step, -step], [torch.arange(len(fl), device=r.device)] * 2  # corners 0 and 2^bits - 1
        reach = r > torch.cat([_rows(dist, fl, n) for dist in side.distance], -1)
        if bool((reach.sum(-1) > 1).any()):
            more, who = _inner_corners(r, reach, xi)
            steps.append(more)
            owner.append(who)
        self.corners = sum(len(o) for o in owner)
        ent, comp = reach.nonzero(as_tuple=True)  # each reaching component alone, to either end
        alone = torch.zeros(2, len(ent), r.shape[-1], dtype=r.dtype, device=r.device)
        pair = torch.arange(len(ent), device=r.device)
        alone[0, pair, comp] = r[ent, comp]
        alone[1, pair, comp] = -r[ent, comp]
        steps.append(alone.flatten(0, 1))
        owner += [ent, ent]
        self.fl, self.pairs = fl, len(ent)
        step, self.owner = torch.cat(steps), torch.cat(owner)
        h_sel = [_rows(h, fl, n) for h in side.hs]
        self.inputs = [(h.index_select(0, self.owner) + st.to(h.dtype)).reshape(-1, *h0.shape[entry_dims:])
                       for h, h0, st in zip(h_sel, side.hs, step.split([h.shape[-1] for h in h_sel], -1))]
        if side.s is not None:
            self.inputs.append(_rows(side.s, fl, n).index_select(0, self.owner).reshape(-1, *side.s.shape[entry_dims:]))


def _direction(side: Side, fl: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``xi`` ``(len(fl), M)``: the signs of the side's direction, else one fixed Rademacher vector."""
    if side.direction is None:
        gen = torch.Generator(device=side.y.device).manual_seed(DIRECTION_SEED)
        xi = (torch.randint(0, 2, (r.shape[-1],), generator=gen, device=r.device) * 2 - 1).to(r.dtype)
        return xi.expand_as(r)
    xi = torch.cat([_rows(t, fl, side.flag.numel()) for t in side.direction], -1)
    return torch.where(xi < 0, -1.0, 1.0).to(r.dtype)


def secant(fn, sides: Sequence[Side], entry_dims: int, out_rounding: torch.Tensor) -> list[torch.Tensor]:
    """Each side's rounding ``(*E,)``, raised at the entries it flags to ``max(c + out_rounding,
    a + rounding)``: ``c`` the largest ``||output(hs + TAIL r sigma, s) - y||`` over the corners
    ``sigma`` (every sign combination of the entry's reaching components, of the first
    :data:`VERTEX_BITS` of them, the others along ``+-xi``), ``a`` the sum over the reaching
    components of the larger change when that component alone moves to either end of its reach,
    ``out_rounding`` ``(*E,)`` the output's own rounding. One evaluation of the map per move."""
    moves = []
    for side in sides:
        fl = side.flag.flatten().nonzero()[:, 0]  # (n,) flagged entries, counted over the flattened E
        moves.append(_Moves(side, fl, entry_dims) if len(fl) else None)
    if all(m is None for m in moves):
        return [side.rounding for side in sides]
    with torch.no_grad():  # rows: side by side, corners within each
        out = fn(*[torch.cat(parts) for parts in zip(*(m.inputs for m in moves if m is not None))])
    if not torch.isfinite(out).all():
        raise NonFiniteError("the map overflows within the modelled rounding of its inputs: the error "
                             "model cannot bound the rounding")
    roundings, start = [], 0
    for side, mv in zip(sides, moves):
        if mv is None:
            roundings.append(side.rounding)
            continue
        roundings.append(_raised(side, mv, out[start:start + len(mv.owner)], out_rounding))
        start += len(mv.owner)
    return roundings


def _raised(side: Side, mv: _Moves, out: torch.Tensor, out_rounding: torch.Tensor) -> torch.Tensor:
    """The side's rounding ``(*E,)`` raised at its flagged entries from the map's values ``out`` at
    its moves."""
    fl, owner, corners, pairs = mv.fl, mv.owner, mv.corners, mv.pairs
    y_sel = _rows(side.y, fl, side.flag.numel()).index_select(0, owner)
    change = entry_norm(wide(out).reshape(len(owner), -1) - wide(y_sel), entry_dims=1)
    zero = torch.zeros(len(fl), dtype=change.dtype, device=change.device)
    top = zero.scatter_reduce(0, owner[:corners], change[:corners], "amax")
    single = zero.index_add(0, owner[corners:corners + pairs], change[corners:].view(2, pairs).amax(0))
    new = side.rounding.clone().flatten()
    old = new[fl].to(top.dtype)
    new[fl] = torch.maximum(top + out_rounding.flatten()[fl].to(top.dtype), single + old).to(new.dtype)
    return new.reshape(side.rounding.shape)


def _rows(t: torch.Tensor, idx: torch.Tensor, entries: int) -> torch.Tensor:
    """Rows ``idx`` of ``t`` ``(*E, ...)`` over its ``entries = prod(E)`` flattened entries: ``(len(idx), width)``."""
    return t.reshape(entries, -1).index_select(0, idx)


def _inner_corners(r: torch.Tensor, reach: torch.Tensor, xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The corners ``1 .. 2^b - 2`` of :func:`secant` for entries with ``k >= 2`` reaching
    components (``b = min(k, VERTEX_BITS)``), corners ``0`` and ``2^b - 1`` being ``+-r xi``
    (``xi`` ``(n, M)``): the steps ``(N, M)`` and the entry (row of ``r`` ``(n, M)``) of each. Corner ``c`` moves the
    ``j``-th reaching component of its entry by ``r xi (1 - 2 bit_(j mod b)(c))`` and the others by
    ``r xi (1 - 2 bit_0(c))``."""
    ent, comp = reach.nonzero(as_tuple=True)
    k = torch.bincount(ent, minlength=len(r))
    bits = k.clamp(max=VERTEX_BITS)
    inner = torch.where(k > 1, 2 ** bits - 2, 0)
    owner = torch.repeat_interleave(torch.arange(len(r), device=r.device), inner)  # (N,)
    corner = 1 + torch.arange(len(owner), device=r.device) - torch.repeat_interleave(inner.cumsum(0) - inner, inner)
    step = r.index_select(0, owner) * xi.index_select(0, owner) * (1 - 2 * (corner & 1)).to(r.dtype)[:, None]
    keep = k[ent] > 1
    ent, comp = ent[keep], comp[keep]
    pos = torch.arange(len(ent), device=r.device)  # ent is sorted: a component's rank in its entry is
    first = torch.zeros_like(k).scatter_reduce(0, ent, pos, "amin", include_self=False)  # pos - first
    bit = (pos - first[ent]) % bits[ent]
    pair = torch.repeat_interleave(torch.arange(len(ent), device=r.device), inner[ent])
    row = (inner.cumsum(0) - inner)[ent][pair] + torch.arange(len(pair), device=r.device) - \
        torch.repeat_interleave(inner[ent].cumsum(0) - inner[ent], inner[ent])
    sign = (1 - 2 * ((corner[row] >> bit[pair]) & 1)).to(r.dtype)
    step[row, comp[pair]] = r[ent[pair], comp[pair]] * xi[ent[pair], comp[pair]] * sign
    return step, owner

