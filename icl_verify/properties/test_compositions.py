"""docs/theory.md §1, the compositions: every block's forward pass equals an independent implementation
written from the table (norms, networks and wiring spelt out with plain tensor operations), so a
wrong wiring (a missing norm, a missing residual) is caught even though the theorem's two sides
both go through ``decompose``. Compared in float64 against a relative threshold of ``1e-11``: a
structural check, far above rounding (at most a few ``1e-15`` seen) and far below any wiring
error (order ``0.1``: the norms have non-trivial affine parameters)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st
from torch.nn import functional as F

from icl_verify.strategies import cases
from icl_verify.properties._support import compositions, layers, record

THRESHOLD = 1e-11


def norm(module, h: torch.Tensor) -> torch.Tensor:
    """LayerNorm or RMSNorm of ``h`` ``(..., d)`` with ``module``'s parameters."""
    if isinstance(module, torch.nn.LayerNorm):
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        return (h - mu) / torch.sqrt(var + module.eps) * module.weight + module.bias
    return h / torch.sqrt((h * h).mean(-1, keepdim=True) + module.eps) * module.weight


def network(net, z: torch.Tensor) -> torch.Tensor:
    """``f(z)``: ``W_2 act(W_1 z + b_1) + b_2`` or ``W_down(silu(W_gate z) * W_up z)``."""
    if len(net.first) == 2:
        gate, up = (z @ lin.weight.T for lin in net.first)
        return (F.silu(gate) * up) @ net.down.weight.T
    h = z @ net.first[0].weight.T + net.first[0].bias
    for lin in net.later:
        h = net.act(h) @ lin.weight.T + lin.bias
    return h


def direct(block, x: torch.Tensor) -> torch.Tensor:
    """The table of docs/theory.md §1 for ``x`` ``(B, T, d)``."""
    A, f, name = block.layer, block.network, block.composition.name
    if name == "none":
        return network(f, A(x))
    if name == "residual":
        h = x + A(x)
        return h + network(f, h)
    if name in ("pre_ln", "pre_rms", "gated"):
        h = x + A(norm(block.norm1, x))
        return h + network(f, norm(block.norm2, h))
    if name == "post_ln":
        h = norm(block.norm1, x + A(x))
        return norm(block.norm2, h + network(f, h))
    if name == "parallel":
        n = norm(block.norm1, x)
        return x + A(n) + network(f, n)
    raise AssertionError(f"composition {name!r} is not in the table of docs/theory.md §1")



@pytest.mark.parametrize("composition", compositions())
@pytest.mark.parametrize("layer", layers())
@given(data=st.data())
def test_forward_matches_design_table(layer, composition, data):
    case = data.draw(cases(layer, composition=composition, dtype=torch.float64), label="case")
    block, x = case.sequence()
    with torch.no_grad():
        got, want = block(x), direct(block, x)
    err = float((got - want).norm() / want.norm().clamp_min(1e-300))
    record("composition_table", layer, err / THRESHOLD)
    assert err <= THRESHOLD, f"{composition} block differs from the table of docs/theory.md §1: relative error {err:.3g}"
