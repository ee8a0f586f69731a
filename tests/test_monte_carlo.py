"""Monte Carlo arithmetic (icl_verify.error_model.monte_carlo): the draws perturb what rounds, by ``2u``
per operand and result, and leave exact data movement alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from icl_verify.error_model.monte_carlo import monte_carlo_samples
from icl_verify.error_model.primitives import unit_roundoff


def test_exact_operations_do_not_round():
    x = torch.randn(3, 4, dtype=torch.float64)
    (e,) = monte_carlo_samples(lambda q: (q.reshape(*q.shape[:-1], 2, 2).transpose(-1, -2).flatten(-2),), x, 8)
    assert e.shape == (8, 3, 4) and bool((e == 0).all())


def test_a_product_draws_a_rounding_per_operand_and_result():
    """``2 q`` perturbs ``q`` and the result by ``±2u``: ``e / (2q)`` is about ``2u (a + b)``,
    ``0`` or ``±4u``, half of the time each (within the product's own rounding)."""
    x = torch.full((1, 512), 3.0, dtype=torch.float64)
    (e,) = monte_carlo_samples(lambda q: (torch.mul(q, 2.0),), x, 4)
    rel = (e / 6.0).abs().flatten() / (4 * unit_roundoff(torch.float64))
    assert float(rel.max()) < 1.8
    assert 0.3 < float((rel > 0.6).double().mean()) < 0.7


def test_float32_draws_use_float32_roundoff():
    x = torch.ones(1, 512)
    (e,) = monte_carlo_samples(lambda q: (torch.exp(q),), x, 2)
    scale = float(e.abs().max() / torch.e) / unit_roundoff(torch.float32)
    assert 2 < scale < 8


def test_a_layer_norm_draws_the_rounding_of_its_mean():
    """Width 2, mean 70 times the spread: the computed mean's rounding (about ``u |mean|``) moves
    the output by about ``u |mean| / std``, in the direction the norm removes from its operands.
    The draws (the norm as its textbook steps) spread at least as far as the fused kernel's own
    error against the exact value ``+-d / sqrt(d^2 + eps)``, ``d = (x_0 - x_1) / 2`` (exact in
    float64); perturbing only the fused kernel's operands and result spreads 3 times less."""
    x = torch.tensor([[0.6402356630026683, 0.6574858633398442]], dtype=torch.float64).expand(8, 2).clone()
    d = (x[:, 0] - x[:, 1]) / 2
    exact = torch.stack([d, -d], -1) / torch.sqrt(d * d + 1e-5)[:, None]
    kernel_error = (F.layer_norm(x, (2,)) - exact).abs()
    assert float(kernel_error.max()) > 20 * unit_roundoff(torch.float64)  # the case has a rounding to find
    (e,) = monte_carlo_samples(lambda q: (F.layer_norm(q, (2,)),), x, 8)
    assert bool((kernel_error <= e.std(0)).all())
