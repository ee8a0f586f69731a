"""docs/theory.md §2, part of the context: ``block(C, x) == block_{W + dW(Y)}(C \\ Y, x)`` for any part
``Y`` of the context (empty and full included)."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from icl_verify import claims
from icl_verify.strategies import cases, subsets
from icl_verify.properties._support import applicable, layers, verdict


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_subset(layer, data):
    case = data.draw(cases(layer), label="case")
    part = data.draw(subsets(case.context.n), label="part")
    block, context, query = case.build()
    with applicable():
        check = claims.subset(block, context, query, part)
    verdict(check, layer)
