"""docs/theory.md §3, telescoping: each prefix increment ``W_{i+1} - W_i`` equals
``(W (z_{i+1} - z_i)) z_x^T / ||z_x||^2``, and the increments sum to ``dW(C)``."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from icl_verify import claims
from icl_verify.strategies import cases
from properties._support import applicable, layers, verdict


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_increments_formula(layer, data):
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
