"""A wrong update fails: over the whole layer registry, an update whose ``dW`` is scaled by
``1 + eps`` so that the updated output moves by more than 100 unit roundoffs fails the identity,
while the exact update passes. This is what a tight error model buys: a tolerance far above the
rounding would let such updates through.

"100 unit roundoffs" is relative to the scale the rounding lives on, ``max(||y||, ||J diag(|x|)||_F)``
with ``x = (h_1, ..., h_K, s)`` the inputs of the block's map ``(hs, s) -> y`` and ``J`` its
Jacobian: how far ``y`` moves when every input moves by its own size; the bypass counts with the
operands it is computed from, ``|s| + |s_r| + |s_t - s_r|`` (the updated side forms
``s = s_r + (s_t - s_r)``, which rounds on the scale of ``s_r`` even when ``s`` is small: the
mamba2 example below), and so does each pre-activation, with the scale of the partial sums it
is computed from, ``|h| + q(W, z) + |b|`` (``tolerance.sum_scale``): ``W z`` rounds on the scale of
``|W| |z|``, not of ``|W z|``, when its terms cancel (the mlstm example below). Without cancellation the two agree; when ``y`` is a cancellation of larger inputs (a bypass and a network output of
opposite signs, a tiny network on a large stream) each input's rounding moves ``y`` by ``u`` of
the input's size, not of ``||y||``, and a move of 100 ``u ||y||`` is inside the rounding.
Stated hypothesis of the property: the move is measured against that scale, and only at entries
inside the first-order regime (where the error model's secant rule applies, cancellation has
left the updated side without correct digits: docs/error-model.md, "First order and
cancellation")."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import assume, example, given, strategies as st

from icl_verify import claims, tolerance
from icl_verify.strategies import BlockSpec, Case, ContextSpec, cases
from icl_verify.updates import apply_update, context_update, updated_inputs
from icl_verify.properties._support import Corner, applicable, layers, only_for, verdict

CANCELLING = Case(
    BlockSpec("linear_attention", "gated", d=2, heads=2, hidden=2, act="relu", scale=1e-3, seed=1,
              dtype=torch.float64),
    ContextSpec(n=1, batch=2, kind="iid", norm=1.0, spread=1.0, jitter=1e-2, seed=842))
"""dW x 1.1 moves the output by 1.19e-14 relative to ``||y||`` (just over 100 u = 1.11e-14) and
passes (error/tolerance 0.63): ``y`` is much smaller than the inputs whose rounding it carries."""

LARGE_BYPASS = Case(
    BlockSpec("mamba2", "gated", d=2, heads=1, hidden=4, act="relu", scale=10.0, seed=149, dtype=torch.float32),
    ContextSpec(n=2, batch=1, kind="near_duplicate", norm=1.0, spread=1.0, jitter=0.01, seed=229))
"""The query alone has a bypass ``|s_r|`` of 1.3e4, with context 32: the updated side's
``s_r + (s_t - s_r)`` rounds at 1.3e4 u, and dW x 1.01 (a move of 525 u of ``||y||``) passes at 0.13."""


CANCELLING_PREACTIVATION = Case(
    BlockSpec("mlstm", "gated", d=4, heads=1, hidden=2, act="relu", scale=1e-3, seed=0, dtype=torch.float64),
    ContextSpec(n=1, batch=2, kind="iid", norm=1e-3, spread=1.0, jitter=1e-2, seed=178))
"""The second entry's pre-activations are 3.5 - 5.5 times smaller than the partial sums of their
inner products: measured against ``|h|`` alone, dW x 1.001 moved the output by 106 u and passed at
0.59 (the tolerance was 180 u of that scale, the exact update's error 0.5 u); counting the
operands, that move is 20 u against a tolerance of 33 u, and dW x 1.01 (the example) moves it by
about 200 u and fails."""


def input_scale(block, upd) -> torch.Tensor:
    """``||J diag(|x|)||_F`` per entry: the move of ``y`` when every input of the block's map
    moves by the size of the operands it is computed from (see the module docstring)."""
    hs, s = updated_inputs(block, upd)
    k = len(hs)
    inputs = list(hs) + ([] if s is None else [s])
    fn = (lambda *a: block.output(list(a[:k]), a[k])) if s is not None else \
        (lambda *a: block.output(list(a), None))
    lead = upd.right.ndim - 1
    sizes = []
    for (w, b), lf, h in zip(block.first_layers(), upd.left, hs):
        wz_r = h - lf if b is None else h - b - lf
        q = tolerance.sum_scale(w, (upd.reference.z, upd.target.z - upd.reference.z), (wz_r, lf))
        sizes.append(h.abs() + q.to(h.dtype) + (0 if b is None else b.abs()))
    if s is not None:
        sizes.append(s.abs() + upd.reference.s.abs() + (upd.target.s - upd.reference.s).abs())
    var = tolerance.propagated_variance(fn, inputs, [sizes], entry_dims=lead)[0][0]
    return var.sqrt().detach()


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
@example(data=Corner("linear_attention", case=CANCELLING, eps=0.1))
@example(data=Corner("mamba2", case=LARGE_BYPASS, eps=0.01))
@example(data=Corner("mlstm", case=CANCELLING_PREACTIVATION, eps=1e-2))
def test_wrong_update_fails(layer, data):
    only_for(data, layer)
    # float64 and float32 only: in bfloat16/float16 a 100 u move is not yet caught everywhere
    # (docs/error-model.md, measured shortfalls)
    block, context, query = data.draw(cases(layer, dtype=st.sampled_from((torch.float64, torch.float32))),
                                      label="case").build()
    eps = data.draw(st.sampled_from([1e-3, 1e-2, 0.1, 1.0]), label="eps")
    with applicable():
        upd = context_update(block, context, query)
        exact = claims.theorem(block, context, query)
        wrong = dataclasses.replace(upd, left=tuple(u * (1 + eps) for u in upd.left))
        check = claims.identity(block, wrong)
        with torch.no_grad():
            move = (apply_update(block, wrong) - apply_update(block, upd)).norm(dim=-1)
        scale = torch.maximum(check.scale, input_scale(block, upd).to(check.scale.dtype))
    verdict(exact, layer)
    u = tolerance.unit_roundoff(context.dtype)
    # entries under the secant rule: the updated side has lost its digits to cancellation there,
    # and no move is measured against rounding (docs/error-model.md, "First order and cancellation")
    moved = (move > 100 * u * scale) & (check.terms["secant"] == 0)
    assume(bool(moved.any()))
    assert bool((check.error > check.tolerance)[moved].all()), (
        f"{layer}: dW scaled by 1 + {eps} moves the output by {float((move / scale).max()):.3g} "
        f"(relative to the input scale, > 100 u = {100 * u:.3g}) and still passes: worst error/tolerance {check.worst_ratio:.3g}")
