"""docs/theory.md §4, every position: position ``t`` of a sequence equals the reference (token ``x_t``
alone, or the query alone) through the block updated by that position's ``dW_t``, ``ds_t``."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from icl_verify import claims
from icl_verify.strategies import cases
from properties._support import applicable, layers, verdict


@pytest.mark.parametrize("reference", ["token", "query"])
@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_every_position(layer, reference, data):
    block, x = data.draw(cases(layer), label="case").sequence()
    with applicable():
        check = claims.positions(block, x, reference)
    verdict(check, layer)
