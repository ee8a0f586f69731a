"""docs/theory.md §4, stacks: the query alone through every block of a stack, each with its own update
(computed from that block's with-context input), reproduces the stack's with-context output at
the query; for stacks of every registered layer and for the real architectures of
:mod:`icl_verify.adapters` (tiny random configurations, when ``transformers`` is installed)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from icl_verify import claims
from icl_verify.strategies import contexts, dtypes, stack_cases
from properties._support import applicable, architectures, build_architecture, layers, verdict


@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_stack(layer, data):
    model, x = data.draw(stack_cases(layer), label="case").build()
    with applicable():
        check = claims.stack(model, x)
    verdict(check, layer)


@pytest.mark.parametrize("arch", architectures())
@given(data=st.data())
def test_stack_real_architecture(arch, data):
    dtype = data.draw(dtypes(), label="dtype")
    model, width = build_architecture(arch, seed=data.draw(st.integers(0, 2**16), label="seed"),
                                      dtype=dtype)
    context, query = data.draw(contexts(max_len=6), label="context").tensors(width, dtype)
    with applicable():
        check = claims.stack(model, torch.cat([context, query[:, None]], dim=1))
    verdict(check, f"arch:{arch}")
