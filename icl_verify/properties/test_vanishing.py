"""docs/theory.md §3, vanishing increments: which layers have ``||W_{i+1} - W_i|| = O(1/i)``.

**The bound (softmax attention without positions, compositions ``none`` and ``residual``).**
Write the query's layer output after ``c_1..c_i`` as ``A_i = W_o concat_h y^h_i`` with
``y^h_i = sum_j p^h_j v^h_j`` over the ``i + 1`` keys ``c_1..c_i, x``. The query's scores
``s_j = q . k_j / sqrt(d_h)`` do not depend on positions, so adding ``c_{i+1}`` rescales the old
weights by ``1 - p`` and gives the new key the weight
``p = 1 / (1 + sum_old e^{s_j - s_new}) <= e^R / (e^R + i + 1)``, ``R = max_j s_j - min_j s_j``
(the instance's own score range over the whole context; ``R <= 2B`` when ``|s_j| <= B``). Hence
exactly ``y_{i+1} - y_i = p (v_new - y_i)`` and, ``y_i`` being a convex combination,
``||y^h_{i+1} - y^h_i|| <= p^h D_h`` with ``D_h = max_{j,k} ||v^h_j - v^h_k||``. For ``none``
(``z = A``) and ``residual`` (``z = x + A``), ``z_{i+1} - z_i = A_{i+1} - A_i``, so

    ||W_{i+1} - W_i||_F = ||W (z_{i+1} - z_i)|| / ||z_x||
                       <= ||W||_2 ||W_o||_2 sqrt(sum_h (D_h e^{R_h} / (e^{R_h} + i + 1))^2) / ||z_x||,

which is O(1/i). Norms compose through LayerNorm only with input-dependent constants, so the
quantitative bound is checked for ``none`` and ``residual`` only. It needs the layer to be a
:class:`~icl_verify.layers.attention.SoftmaxAttention` without rotary positions or a window:
with rotary positions, adding a token shifts the query's position and so every old score, the
identity ``y_{i+1} - y_i = p (v_new - y_i)`` fails and the derivation does not apply (the
property skips such layers, saying so). The absolute slack is the rounding of the layer outputs,
``gamma(8 (d + T)) ||W||_2 (||z_i|| + ||z_{i+1}||) / ||z_x||``.

**Layers without the guarantee** (``vanishing_increments=False``: linear attention, RNNs,
state-space mixers, windowed attention): ``hypothesis.find`` must produce an instance whose last
increment is at least as large as its first, ``||W_n - W_{n-1}|| >= ||W_1 - W_0|| > 0``, so the
suite states which layers have the property instead of assuming it.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, settings, strategies as st
from hypothesis.errors import NoSuchExample

from icl_verify import dynamics, tolerance
from icl_verify.layers.attention import SoftmaxAttention
from icl_verify.strategies import Case, cases
from icl_verify.properties._support import applicable, layers, record

BOUNDED = ("none", "residual")


def increment_bound(block, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The module docstring's bound on ``||W_{i+1} - W_i||_F``, ``i = 0..n-1``: ``(B, n)``."""
    layer = block.layer
    seq = torch.cat([context, query[:, None]], dim=1)
    q, k, v = layer.split(seq)  # (B, H, T, dh)
    scores = (q[:, :, -1:] @ k.transpose(-1, -2)).squeeze(-2) / math.sqrt(q.shape[-1])  # (B, H, T)
    spread = scores.max(-1).values - scores.min(-1).values  # R_h, (B, H)
    diam = torch.cdist(v, v).flatten(-2).max(-1).values  # D_h, (B, H)
    i = torch.arange(context.shape[1], dtype=seq.dtype)  # old keys: i + 1
    p = torch.sigmoid(spread[..., None] - torch.log(i + 1))  # e^R / (e^R + i + 1), (B, H, n)
    per_head = (diam[..., None] * p).norm(dim=1)  # (B, n)
    (w, _), = block.first_layers()
    z_x = block.decompose(query[:, None]).z[:, 0]
    return (torch.linalg.matrix_norm(w, 2) * torch.linalg.matrix_norm(layer.out.weight, 2)
            * per_head / z_x.norm(dim=-1, keepdim=True))


def bound_applies(block) -> bool:
    layer = block.layer
    return (isinstance(layer, SoftmaxAttention) and layer.position_free
            and block.composition.name in BOUNDED)


@pytest.mark.parametrize("layer", layers(vanishing=True))
@given(data=st.data())
def test_increments_obey_score_bound(layer, data):
    composition = data.draw(st.sampled_from(BOUNDED), label="composition")
    block, context, query = data.draw(
        cases(layer, composition=composition, min_len=1, dtype=torch.float64), label="case").build()
    if not bound_applies(block):
        pytest.skip(f"{layer}: the score bound is derived for position-free softmax attention only")
    with applicable(), torch.no_grad():
        upd = dynamics.prefix_updates(block, context, query)
        norms = dynamics.increment_norms(upd)[..., 0]  # (B, n)
        bound = increment_bound(block, context, query)
        z = upd.target.z  # rounding of the layer outputs: gamma(8 (d + T)) relative
        zn = z.norm(dim=-1)
        (w, _), = block.first_layers()
        slack = (tolerance.gamma(8 * (z.shape[-1] + z.shape[1]), z.dtype) * torch.linalg.matrix_norm(w, 2)
                 * (zn[:, 1:] + zn[:, :-1]) / zn[:, :1])
    record("vanishing_bound", layer, float((norms / (bound + slack)).max()))
    assert (norms <= bound + slack).all(), (
        f"increments {norms.tolist()} exceed the O(1/i) bound {bound.tolist()}")


def grows(case: Case) -> bool:
    """``||W_n - W_{n-1}|| >= ||W_1 - W_0|| > 0`` for some batch entry and first matrix."""
    block, context, query = case.build()
    try:
        with torch.no_grad():
            norms = dynamics.increment_norms(dynamics.prefix_updates(block, context, query))
    except Exception:  # degenerate or overflowing instances do not count
        return False
    first, last = norms[:, 0], norms[:, -1]
    return bool(((last >= first) & (first > 0) & torch.isfinite(norms).all()).any())


@pytest.mark.parametrize("layer", layers(vanishing=False))
def test_hypothesis_finds_increments_that_do_not_shrink(layer):
    try:
        found = find(cases(layer, composition=st.sampled_from(BOUNDED), min_len=4, max_len=8,
                           dtype=torch.float64),
                     grows,
                     settings=settings(max_examples=300, database=None, derandomize=True,
                                       phases=(Phase.generate,), deadline=None,
                                       suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        pytest.fail(f"{layer}: no instance found whose increments grow; if O(1/i) is proven for "
                    f"it, register it with vanishing_increments=True")
    assert grows(found)
