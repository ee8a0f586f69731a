"""docs/theory.md §2, the theorem: the query after the full context equals the query alone through the
block with ``W + dW(C)`` and bypass ``s + ds``; every layer, every composition, dense and
factored evaluation.

Two corners found by the stress profile are explicit examples: ``MAMBA2_NO_DIGIT``, where the
updated side's pre-activations have no correct digit and one random direction of the secant rule
fell short of the map's change over the rounding's reach (error/tolerance 1.002; 0.89 with every
corner of the reaching components), and ``MQA_SUBNORMAL``, a float16 block whose SwiGLU products land
among the subnormals (1.02 without the underflow terms; 0.18 with them)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, strategies as st

from icl_verify import claims
from icl_verify.strategies import BlockSpec, Case, ContextSpec, cases, contexts, dtypes
from icl_verify.properties._support import (Corner, applicable, architectures, build_architecture, compositions,
                                 layers, only_for, verdict)

MAMBA2_NO_DIGIT = Case(
    BlockSpec("mamba2", "none", d=6, heads=2, hidden=3, act="tanh", scale=10.0, seed=65535, dtype=torch.bfloat16),
    ContextSpec(n=1, batch=1, kind="repeated", norm=10.0, spread=3.0, jitter=0.01, seed=1))
"""bfloat16, weight scale 10, tokens of norm 10: the updated side's ``W z_r + left`` cancels to
``(-318, 178, 22)`` against ``(19.4, 12.8, -16.5)`` on the target side, all three inside their
modelled rounding (relative error of the output 1.61)."""

MQA_SUBNORMAL = Case(
    BlockSpec("multi_query_attention", "gated", d=4, heads=4, hidden=2, act="relu", scale=0.1, seed=4,
              dtype=torch.float16),
    ContextSpec(n=2, batch=2, kind="repeated", norm=0.001, spread=100.0, jitter=0.01, seed=4586))
"""float16, weight scale 0.1, tokens of norm 1e-3: products inside the SwiGLU network fall below
float16's smallest normal number (6.1e-5), where they round absolutely, by up to 3e-8."""


@pytest.mark.parametrize("composition", compositions())
@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
@example(data=Corner("mamba2", case=MAMBA2_NO_DIGIT, dense=False))
@example(data=Corner("multi_query_attention", case=MQA_SUBNORMAL, dense=False))
def test_theorem(layer, composition, data):
    only_for(data, layer, composition)
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
