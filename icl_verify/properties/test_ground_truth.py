"""A ground truth that does not come from icl_verify's own decomposition: von Oswald et al.
2023's linear self-attention construction (:mod:`icl_verify.experiments.gd_construction`), for
which the query's network input after ``N`` examples is ``(x_q, W_1 x_q)``, ``W_1`` one
gradient-descent step from ``W_0 = 0`` on ``L(W) = 1/(2N) sum_j ||W x_j - y_j||^2``.

So the implicit update of the block's first matrix ``W`` for the first ``i`` examples, applied to
the query alone, must be ``W (0, yhat_i)``, ``yhat_i`` the gradient step's prediction over the
first ``i`` examples (``i = 0..N``, learning rate ``lr`` with the full ``1/N``), and the SGD form's
step ``i`` must land on ``W + W (0, yhat_{i+1}) z_x^T / ||z_x||^2`` at the query. ``yhat`` is
written below from the loss's gradient, independently of the layer and of icl_verify.

**Error model (float64, first order).** ``M_i = (lr/N) sum_{j<=i} |y_j| (|x_j| . |x_q|)`` bounds
the terms of ``yhat_i``. The layer's ``y`` slot is an inner product of length ``dx`` per score, a
sum of ``T = N+1`` terms and one product by ``lr/N``: within ``gamma(dx + T + 2) M_i`` of
``yhat_i``; the test's own ``yhat_i`` is within ``gamma(dx + N + 1) M_i``; its ``x`` slot is
exact (zero values). ``left = W dz``, ``right . z_x = 1 + theta(d + 2)`` and the products with
``W`` cost ``gamma(d)`` each (``|dW_i| |z_x| = |left_i|``). Summing (``gamma(a) + gamma(b) <=
gamma(a + b)``), componentwise with ``g = gamma(4d + 2T + 8)``:

    |dW_i z_x - W (0, yhat_i)| <= g (|W| M_i + 2 |W| |yhat_i| + |left_i|),

and for the SGD step ``S_i = fl(W_i - h D_i)``, ``h D_i = h W (z_i - z_{i+1}) z_x^T``, evaluated as
``S_i z_x - W z_x``, the extra roundings of forming ``W_i``, ``h D_i``, ``S_i`` and the two products:

    |S_i z_x - W z_x - W (0, yhat_{i+1})| <= g (|W| M_{i+1} + 2 |W| |yhat_{i+1}|
                                              + (2|W| + |dW_i| + |h D_i| + |S_i|) |z_x|).

The error and tolerance of each entry are the Euclidean norms over the ``m`` rows.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from icl_verify import dynamics, tolerance as tol
from icl_verify.claims import Check
from icl_verify.experiments.gd_construction import gd_block, gd_tokens
from icl_verify.properties._support import not_recorded, verdict

NAME = "gd_construction"


def gd_predictions(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, lr: float) -> torch.Tensor:
    """``yhat_i = W_1^(i) x_q``, ``i = 0..N``: ``(B, N+1, dy)``, where
    ``W_1^(i) = W_0 - lr sum_{j<=i} grad_W (1/(2N)) ||W x_j - y_j||^2 |_(W_0)``, ``W_0 = 0``."""
    b, n, dx = x.shape
    w0 = x.new_zeros(b, y.shape[-1], dx)
    residual = torch.einsum("bod,bjd->bjo", w0, x) - y  # W_0 x_j - y_j
    per_example = residual[..., :, None] * x[..., None, :] / n  # gradient of example j's loss term
    grads = torch.cat([torch.zeros_like(per_example[:, :1]), per_example.cumsum(1)], dim=1)
    w1 = w0[:, None] - lr * grads
    return torch.einsum("biod,bd->bio", w1, x_query)


def magnitudes(x, y, x_query, lr) -> torch.Tensor:
    """``M_i`` of the module docstring: ``(B, N+1, dy)``."""
    terms = y.abs() * (x.abs() @ x_query.abs()[..., None]) * lr / x.shape[1]
    return torch.cat([torch.zeros_like(terms[:, :1]), terms.cumsum(1)], dim=1)


def instance(dx: int, dy: int, n: int, lr: float, hidden: int, seed: int):
    """The construction's block, and a batch of 2 noisy linear-regression prompts."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x, w_star, x_query = draw(2, n, dx), draw(2, dy, dx), draw(2, dx)
    y = x @ w_star.transpose(-1, -2) + 0.1 * draw(2, n, dy)
    return gd_block(dx, dy, lr, n, hidden=hidden, seed=seed), x, y, x_query


def embed(v: torch.Tensor, dx: int) -> torch.Tensor:
    """``(0, v)``: a ``y``-slot vector as a token."""
    return torch.cat([v.new_zeros(*v.shape[:-1], dx), v], dim=-1)


def ground_truth_checks(block, x, y, x_query, lr) -> tuple[Check, Check]:
    """The update and SGD checks of the module docstring (entries ``(B, N+1)`` and ``(B, N)``)."""
    dx, n = x.shape[-1], x.shape[1]
    context, query = gd_tokens(x, y, x_query)
    (w, _), = block.first_layers()
    with torch.no_grad():
        upd = dynamics.prefix_updates(block, context, query)
    steps, = dynamics.sgd_steps(block, upd)  # (B, N, m, d)
    with torch.no_grad():
        target = embed(gd_predictions(x, y, x_query, lr), dx)  # (B, N+1, d)
        size = tol.abs_matvec(w, embed(magnitudes(x, y, x_query, lr), dx)) + 2 * tol.abs_matvec(w, target)
        g = tol.gamma(4 * context.shape[-1] + 2 * (n + 1) + 8, torch.float64)
        z_x = upd.reference.z  # (B, N+1, d), the query alone
        dw, = upd.dense()
        rhs = target @ w.T
        lhs = torch.einsum("bimd,bid->bim", dw, z_x)
        update = Check("ground_truth_update", (lhs - rhs).norm(dim=-1),
                       (g * (size + upd.left[0].abs())).norm(dim=-1), rhs.norm(dim=-1))
        z, zx = upd.target.z, z_x[:, :-1]
        h_d = ((z[:, :-1] - z[:, 1:]) @ w.T).abs()[..., :, None] * zx.abs()[..., None, :] \
            / (zx * zx).sum(-1)[..., None, None]
        spread = 2 * w.abs() + dw[:, :-1].abs() + h_d + steps.abs()
        lhs = torch.einsum("bimd,bid->bim", steps, zx) - zx @ w.T
        sgd = Check("ground_truth_sgd", (lhs - rhs[:, 1:]).norm(dim=-1),
                    (g * (size[:, 1:] + torch.einsum("bimd,bid->bim", spread, zx.abs()))).norm(dim=-1),
                    rhs[:, 1:].norm(dim=-1))
    return update, sgd


@given(dx=st.integers(1, 4), dy=st.integers(1, 2), n=st.integers(1, 8),
       lr=st.floats(0.01, 2.0), hidden=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_implicit_update_is_one_gradient_step(dx, dy, n, lr, hidden, seed):
    block, x, y, x_query = instance(dx, dy, n, lr, hidden, seed)
    for check in ground_truth_checks(block, x, y, x_query, lr):
        verdict(check, NAME)


def wrong_mean(dx, dy, lr, n, **kw):
    """Averaging over ``N + 1`` (the query counted as an example)."""
    return gd_block(dx, dy, lr, n + 1, **kw)


def negated_values(dx, dy, lr, n, **kw):
    """``W_v = [[0, 0], [0, -I]]``: the step of the loss with ``-y``."""
    block = gd_block(dx, dy, lr, n, **kw)
    with torch.no_grad():
        block.layer.qkv.weight[2 * (dx + dy):] *= -1
    return block


def rescaled_update(original):
    """``right = z_r / ||z_t||^2``: the update normalised by the target."""
    def general_update(weights, target, reference, **kw):
        upd = original(weights, target, reference, **kw)
        norm = (target.z * target.z).sum(-1, keepdim=True)
        return type(upd)(upd.left, reference.z / norm, upd.shift, upd.target, upd.reference)
    return general_update


def doubled_sgd(original):
    def sgd_steps(block, upd):
        weights = dynamics.prefix_weights(block, upd)
        return tuple(2 * s - w[:, :-1] for s, w in zip(original(block, upd), weights))
    return sgd_steps


@pytest.mark.parametrize("mutant", ["wrong_mean", "negated_values", "rescaled_update", "doubled_sgd"])
def test_ground_truth_catches_mutants(mutant, monkeypatch):
    """A wrong construction or wrong update code fails the check (fixed instance, N = 5)."""
    dx, dy, n, lr, hidden, seed = 3, 1, 5, 0.5, 4, 7
    block, x, y, x_query = instance(dx, dy, n, lr, hidden, seed)
    assert all(c.passed for c in ground_truth_checks(block, x, y, x_query, lr))  # control
    if mutant in ("wrong_mean", "negated_values"):
        block = globals()[mutant](dx, dy, lr, n, hidden=hidden, seed=seed)
    elif mutant == "rescaled_update":
        monkeypatch.setattr(dynamics, "general_update", rescaled_update(dynamics.general_update))
    else:
        monkeypatch.setattr(dynamics, "sgd_steps", doubled_sgd(dynamics.sgd_steps))
    with not_recorded():
        checks = ground_truth_checks(block, x, y, x_query, lr)
    failing = {c.claim for c in checks if not c.passed}
    assert failing >= ({"ground_truth_sgd"} if mutant == "doubled_sgd" else {"ground_truth_update"}), failing
