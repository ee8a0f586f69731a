"""docs/theory.md §2, the theorem: the query after the full context equals the query alone through the
block with ``W + dW(C)`` and bypass ``s + ds``; every layer, every composition, dense and
factored evaluation."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from icl_verify import claims
from icl_verify.strategies import cases, contexts, dtypes
from properties._support import (applicable, architectures, build_architecture, compositions,
                                 layers, verdict)


@pytest.mark.parametrize("composition", compositions())
@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_theorem(layer, composition, data):
    block, context, query = data.draw(cases(layer, composition=composition), label="case").build()
    dense = data.draw(st.booleans(), label="dense")
    with applicable():
        check = claims.theorem(block, context, query, dense=dense)
    verdict(check, layer)


@pytest.mark.parametrize("arch", architectures())
@given(data=st.data())
def test_theorem_real_architecture(arch, data):
    """The theorem at every block of a real architecture, on that block's with-context input."""
    dtype = data.draw(dtypes(), label="dtype")
    model, width = build_architecture(arch, seed=data.draw(st.integers(0, 2**16), label="seed"),
                                      dtype=dtype)
    context, query = data.draw(contexts(max_len=6), label="context").tensors(width, dtype)
    with torch.no_grad():
        inputs = model.block_inputs(torch.cat([context, query[:, None]], dim=1))
    with applicable():
        checks = [claims.theorem(block, h[:, :-1], h[:, -1]) for block, h in zip(model.blocks, inputs)]
    verdict(checks, f"arch:{arch}")
