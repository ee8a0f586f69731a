"""docs/theory.md §3, telescoping: each prefix increment ``W_{i+1} - W_i`` equals
``(W (z_{i+1} - z_i)) z_x^T / ||z_x||^2``, and the increments sum to ``dW(C)``.

``test_telescoping_sum_autograd`` also draws inputs that require grad, so that the prefix pass
and ``dW(C)``'s own pass record autograd; its ``@example`` is a stress-profile counter-example of
an earlier version, where the prefix pass recorded autograd and ``dW(C)``'s pass did not: torch's
fused LSTM rounds differently in the two modes, and saturated gates (scale 10) put a relative
8e-6 between the two network inputs ``z_n`` and ``z_t`` (error/tolerance 26.8; 3.41 as shrunk by
that run). Both passes now follow one autograd rule, and the claim checks that they agree.
``SUBNORMAL_LEFT`` is a float16 increments case whose left factors are subnormal (the absolute
rounding of gradual underflow, now in the error model)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, strategies as st

from icl_verify import claims
from icl_verify.strategies import BlockSpec, Case, ContextSpec, cases
from icl_verify.properties._support import Corner, applicable, layers, only_for, verdict

SATURATED_LSTM = Case(
    block=BlockSpec(layer="lstm", composition="none", d=2, heads=1, hidden=2, act="relu", scale=10.0,
                    seed=472, dtype=torch.float32),
    context=ContextSpec(n=1, batch=2, kind="near_duplicate", norm=1.0, spread=100.0, jitter=1e-05, seed=2))
"""Telescoping, lstm, composition none, float32, d = 2, scale 10, n = 1 (see the module docstring)."""

SUBNORMAL_LEFT = Case(
    block=BlockSpec(layer="linear_attention_elu", composition="none", d=6, heads=1, hidden=3, act="gelu",
                    scale=1e-3, seed=3, dtype=torch.float16),
    context=ContextSpec(n=3, batch=1, kind="near_duplicate", norm=1.0, spread=100.0, jitter=0.01, seed=562))
"""Increments in float16 with left factors ``W (z_i - z_r)`` of about 3e-7, subnormal, times a
right factor of 5e4: each left factor's absolute rounding (up to 3e-8) becomes 1.6e-3 of the
matrix; relative rounding alone gave error/tolerance 4.38 (found by a search over float16 cases),
the gradual-underflow term 0.36."""


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
@example(data=Corner("linear_attention_elu", case=SUBNORMAL_LEFT))
def test_increments_formula(layer, data):
    only_for(data, layer)
    block, context, query = data.draw(cases(layer, min_len=1), label="case").build()
    with applicable():
        check = claims.increments(block, context, query)
    verdict(check, layer)


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_telescoping_sum(layer, data):
    block, context, query = data.draw(cases(layer, min_len=1), label="case").build()
    with applicable():
        check = claims.telescoping(block, context, query)
    verdict(check, layer)


@given(case=cases(min_len=1), record_grad=st.booleans())
@example(case=SATURATED_LSTM, record_grad=True).via("stress counter-example")
@example(case=SATURATED_LSTM, record_grad=False).via("stress counter-example")
def test_telescoping_sum_autograd(case, record_grad):
    block, context, query = case.build()
    with applicable():
        check = claims.telescoping(block, context.clone().requires_grad_(record_grad), query)
    verdict(check, case.block.layer)
