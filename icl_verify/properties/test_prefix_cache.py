"""The fast path (docs/speed.md): for every layer whose modules have ``states`` and ``step``, the
updates computed by the fast path equal the generic ones (one forward pass per prefix) within
``TAIL`` standard deviations of the two computations' rounding (:func:`icl_verify.prefix_cache.prefix_agreement`):

- prefix updates ``dW(c_1..c_i)``, ``i = 0..n``, of a block (every copy the query);
- every position's update of a sequence, each position a distinct copy after its own prefix
  (``step``'s copy ``i`` must read prefix ``i``);
- the prefix updates of every block of a stack (block ``l``'s copies come from block ``l-1``'s
  step).

A ``step`` that disagrees with ``forward`` (a dropped decay, a shifted prefix) fails here while
every other property, which reads ``forward`` only, passes."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from icl_verify import prefix_cache
from icl_verify.strategies import cases, stack_cases
from icl_verify.properties._support import applicable, layers, verdict


@pytest.mark.parametrize("layer", layers(fast_path=True))
@given(data=st.data())
def test_fast_prefix_updates(layer, data):
    block, context, query = data.draw(cases(layer, min_len=1), label="case").build()
    with applicable():
        check = prefix_cache.prefix_agreement(block, context, query)
    verdict(check, layer)


@pytest.mark.parametrize("layer", layers(fast_path=True))
@given(data=st.data())
def test_fast_position_updates(layer, data):
    block, x = data.draw(cases(layer, min_len=1), label="case").sequence()
    reference = data.draw(st.sampled_from(["token", "query"]), label="reference")
    with applicable():
        check = prefix_cache.position_agreement(block, x, reference)
    verdict(check, layer)


@pytest.mark.parametrize("layer", layers(fast_path=True))
@given(data=st.data())
def test_fast_stack_prefix_updates(layer, data):
    stack, x = data.draw(stack_cases(layer, min_len=1), label="case").build()
    with applicable():
        check = prefix_cache.stack_agreement(stack, x[:, :-1], x[:, -1])
    verdict(check, layer)
