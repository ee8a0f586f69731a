"""Refinements that lower the tolerance where both sides provably share a rounding
(docs/error-model.md, "shared_entries" and "additive_entries"): checked bitwise per entry, never
assumed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from .primitives import TAIL, entry_norm, wide

if TYPE_CHECKING:
    from ..blocks import ContextualBlock

PREFILTER = 8
"""Components compared on every entry before the full comparison, which runs only on the entries
whose first components agree."""


def shared_entries(hs: Sequence[torch.Tensor], target_side: tuple[Sequence[torch.Tensor], torch.Tensor] | None,
                   entry_dims: int) -> torch.Tensor | None:
    """``(*E,)``: the entries at which every pre-activation of the target side (``target_side[0]``)
    equals the updated side's (``hs``) bitwise (docs/error-model.md, "shared_entries"); None when
    ``target_side`` is None."""
    if target_side is None:
        return None
    pairs = [(a.flatten(entry_dims), b.flatten(entry_dims)) for a, b in zip(target_side[0], hs)]
    # candidates: the entries whose first components agree; the full comparison on those only
    equal = torch.stack([(a[..., :PREFILTER] == b[..., :PREFILTER]).all(-1) for a, b in pairs]).all(0)
    if equal.any():
        idx = equal.nonzero(as_tuple=True)
        equal[idx] = torch.stack([(a[idx] == b[idx]).all(-1) for a, b in pairs]).all(0)
    return equal


def additive_entries(block: ContextualBlock, hs: Sequence[torch.Tensor], s: torch.Tensor, y: torch.Tensor,
                     y_t: torch.Tensor, s_t: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """``(*E,)``: the entries where both sides are, bitwise, their bypass plus one network value
    ``g = output(hs, 0)``: ``y_t == fl(s_t + g)`` and ``y == fl(s + g)`` (docs/error-model.md,
    "additive_entries"). ``g`` is evaluated at the ``shared`` entries and one other, and at the rest
    only if that one passes."""
    flat = shared.flatten()
    probe = flat.clone()
    rest = (~flat).nonzero()
    if len(rest):
        probe[rest[0]] = True
    ok = _additive(block, hs, s, y, y_t, s_t, probe.reshape(shared.shape))
    if len(rest) > 1 and ok.flatten()[rest[0]]:
        ok = ok | _additive(block, hs, s, y, y_t, s_t, ~probe.reshape(shared.shape))
    return ok


def _additive(block, hs, s, y, y_t, s_t, mask):
    with torch.no_grad():
        g = block.output([h[mask] for h in hs], torch.zeros_like(s[mask]))
    if g.shape != s[mask].shape:
        return torch.zeros_like(mask)
    ok = ((s_t[mask] + g) == y_t[mask]).all(-1) & ((s[mask] + g) == y[mask]).all(-1)
    return torch.zeros_like(mask).masked_scatter(mask, ok)


def additive_scales(u: float, s_t: torch.Tensor, s_r: torch.Tensor, s: torch.Tensor, y_t: torch.Tensor,
                    y: torch.Tensor, entry_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``TAIL`` times each side's rounding ``(*E,)`` at additive entries, where ``y_t - y_u =
    fl(s_t + g) - fl(s_u + g)``: only the shift's rounding (``u |s_t - s_r| + u |s_u|``) and each
    side's last addition (``u |y|``) remain. ``y`` (the updated side's output) in float32 at least."""
    sh = wide(s_t - s_r).abs()
    add_t = TAIL * u * entry_norm(wide(y_t), entry_dims=entry_dims)
    add_u = TAIL * u * entry_norm(sh + wide(s).abs() + y.abs(), entry_dims=entry_dims)
    return add_t, add_u
