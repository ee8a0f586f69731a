"""docs/theory.md §2, structure of the update: each first matrix changes by rank at most one; the bypass
shift exists exactly when the block has a bypass (every composition but ``none``); a parallel
block's network input ignores the context, so its ``dW`` is exactly zero; an empty context gives
exactly zero updates."""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, strategies as st

from icl_verify import context_update, position_updates, tolerance
from icl_verify.strategies import cases
from icl_verify.properties._support import applicable, layers


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_rank_at_most_one(layer, data):
    case = data.draw(cases(layer), label="case")
    block, x = case.sequence()
    with applicable():
        upd = position_updates(block, x, reference=data.draw(st.sampled_from(["token", "query"])))
    for k, dw in enumerate(upd.dense()):
        # computed dW = left right^T rounded elementwise (|E| <= u |dW|): by Weyl, sigma_2 <= ||E||_F
        # <= u sigma_1, below the default threshold eps max(m, d) sigma_1 of dW's own dtype; the
        # rank itself in float32 at least (no half-precision kernel)
        m, d = dw.shape[-2:]
        # the relative rounding bound needs normal numbers: a subnormal entry rounds absolutely
        # (stated hypothesis of the error model: no gradual underflow)
        a = dw.detach().abs()
        assume(not bool(((a > 0) & (a < torch.finfo(dw.dtype).tiny)).any()))
        ranks = torch.linalg.matrix_rank(tolerance.wide(dw), rtol=torch.finfo(dw.dtype).eps * max(m, d))
        assert (ranks <= 1).all(), f"first matrix {k}: ranks {ranks.tolist()} > 1"


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_bypass_shift_iff_bypass(layer, data):
    case = data.draw(cases(layer), label="case")
    block, context, query = case.build()
    with applicable():
        upd = context_update(block, context, query)
    no_bypass = case.block.composition == "none"
    assert (upd.shift is None) == no_bypass, (
        f"composition {case.block.composition}: shift is {'None' if upd.shift is None else 'present'}")
    assert (block.decompose(torch.cat([context, query[:, None]], 1)).s is None) == no_bypass


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_parallel_dw_is_zero(layer, data):
    block, context, query = data.draw(cases(layer, composition="parallel"), label="case").build()
    with applicable():
        upd = context_update(block, context, query)
    for dw in upd.dense():
        assert torch.equal(dw, torch.zeros_like(dw)), f"max |dW| = {float(dw.abs().max()):.3g}"


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_empty_context_update_is_zero(layer, data):
    block, context, query = data.draw(cases(layer, max_len=0), label="case").build()
    with applicable():
        upd = context_update(block, context, query)
    for dw in upd.dense():
        assert torch.equal(dw, torch.zeros_like(dw))
    if upd.shift is not None:
        assert torch.equal(upd.shift, torch.zeros_like(upd.shift))
