"""docs/theory.md §3, SGD form: one gradient step (autograd) on ``L_i(W') = trace(D_i^T W')`` with
learning rate ``1/||z_x||^2`` from ``W_i`` lands on ``W_{i+1}``."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from icl_verify import claims
from icl_verify.strategies import cases
from icl_verify.properties._support import applicable, layers, verdict


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_sgd_step(layer, data):
    block, context, query = data.draw(cases(layer, min_len=1), label="case").build()
    with applicable():
        check = claims.sgd(block, context, query)
    verdict(check, layer)
