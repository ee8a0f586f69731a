"""The pieces that keep the every-layer check cheap give what the direct computation gives: the
one-pass ``identity_errors``, the one-product partial-sum scale, the joint propagation of both
sides and the one-pass norms."""
from __future__ import annotations

import pytest
import torch

from icl_verify import build_block, claims, position_updates
from icl_verify import error_model as tol
from icl_verify.error_model import jacobian


@pytest.mark.parametrize("w_size, z_size", [(1.0, 1.0), (1e150, 1e-200), (1e-150, 1e100)])
def test_sum_scale_is_the_root_sum_of_squares_of_each_scale(w_size, z_size):
    """One product for several vectors, computed in float32 on operands scaled by their largest
    entry: within ``d u_32`` of the float64 formula, also where float32 squares would overflow
    or underflow unscaled."""
    g = torch.Generator().manual_seed(0)
    w, z1, z2 = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(7, 5), (3, 5), (3, 5)])
    w, z1, z2 = w * w_size, z1 * z_size, z2 * z_size
    each = [((z * z) @ (w * w).T + (z @ w.T) ** 2).sqrt() for z in (z1, z2)]
    got = tol.sum_scale(w, (z1, z2), (z1 @ w.T, z2 @ w.T))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.hypot(*each), rtol=5 * tol.unit_roundoff(torch.float32) * 5, atol=0)


@pytest.mark.parametrize("width", [8, 80])  # exact (reverse mode) and probed
def test_propagated_variance_of_scaled_permutations_is_exact(width):
    """``y = d * a[p] + e * b[q]``: the rows of ``J diag(r)`` are orthogonal, so every Rademacher
    probe gives ``||J diag(r)||_F^2 = sum_i d_i^2 r_a[p_i]^2 + e_i^2 r_b[q_i]^2`` exactly, for each
    set of scales; the value is ``fn`` at the inputs."""
    g = torch.Generator().manual_seed(1)
    p, q = torch.randperm(width, generator=g), torch.randperm(width, generator=g)
    d, e, a, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(width,), (width,), (4, width), (4, width)])
    sets = [[torch.rand(4, width, generator=g, dtype=torch.float64) for _ in range(2)] for _ in range(2)]
    fn = lambda x, y: d * x[..., p] + e * y[..., q]  # noqa: E731
    var, value = tol.propagated_variance(fn, [a, b], sets, entry_dims=1, width=width)
    for got, (ra, rb) in zip(var, sets):
        want = (d * ra[..., p]).square().sum(-1) + (e * rb[..., q]).square().sum(-1)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert torch.equal(value, fn(a, b))


@pytest.mark.parametrize("dtype, big, small", [(torch.float32, 1e30, 1e-30), (torch.float64, 1e300, 1e-300)])
def test_entry_norm_neither_overflows_nor_underflows(dtype, big, small):
    x = torch.tensor([[big, big, 0.0], [small, small, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    want = torch.tensor([big * 2 ** 0.5, small * 2 ** 0.5, 5.0, 0.0], dtype=dtype)
    torch.testing.assert_close(tol.entry_norm(x, entry_dims=1), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(tol.entry_norm(x[:, :1], x[:, 1:], entry_dims=1), want, rtol=1e-6, atol=0)


def test_identity_with_the_target_side_given_is_the_identity():
    block = build_block("softmax_attention", "gated", 8, heads=2, seed=3)
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    upd = position_updates(block, x)
    hs_t = block.pre_activations(upd.target.z)
    plain = claims.identity(block, upd)
    given = claims.identity(block, upd, target_side=(hs_t, block.output(hs_t, upd.target.s)))
    for f in ("error", "tolerance", "scale"):
        assert torch.equal(getattr(plain, f), getattr(given, f))
    wrong = claims.identity(block, upd, target_side=(hs_t, block.output(hs_t, upd.target.s) * (1 + 1e-6)))
    assert plain.passed and not wrong.passed


def test_identity_errors_in_one_pass_equal_the_check_per_layer():
    pytest.importorskip("transformers")
    from icl_verify.adapters import adapt_causal_lm
    from icl_verify.adapters.llama import tiny_lm
    from icl_verify.causal_lm import identity_errors

    lm = adapt_causal_lm(tiny_lm("llama").requires_grad_(False))
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(0))
    errors, ratios, _ = identity_errors(lm, ids)
    xs = lm.stack.block_inputs(lm.embed(ids))
    for l, block in enumerate(lm.stack.blocks):
        check = claims.identity(block, position_updates(block, xs[l]), dense=False)
        torch.testing.assert_close(errors[l, :-1], (check.error / check.scale)[0, :-1], rtol=0, atol=0)
        torch.testing.assert_close(ratios[l, :-1], check.ratio[0, :-1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_the_probes_forward_pass_is_the_plain_output_bitwise(dtype, monkeypatch):
    """The probe's forward pass under autograd serves as the updated side's output: on every tiny
    real architecture, every block, it equals ``block.output(hs, s)`` evaluated without autograd
    bit for bit (the shared-rounding argument compares such values bitwise)."""
    pytest.importorskip("transformers", reason="the adapters need the optional extra: pip install '.[models]'")
    from icl_verify.adapters import get_architecture, list_architectures
    from icl_verify.updates import updated_inputs

    monkeypatch.setattr(jacobian, "EXACT_WIDTH", 0)  # the tiny models are narrow: force the probe
    g = torch.Generator().manual_seed(0)
    for name in list_architectures():
        info = get_architecture(name)
        stack = info.build(seed=0, dtype=dtype)
        x = torch.randn(2, 5, info.width, generator=g).to(dtype)
        with torch.no_grad():
            xs = stack.block_inputs(x)
        for l, block in enumerate(stack.blocks):
            upd = position_updates(block, xs[l])
            with torch.no_grad():
                hs, s = updated_inputs(block, upd, dense=False)
                plain = block.output(hs, s)
            scales = [h.abs() for h in hs] + ([] if s is None else [s.abs()])
            _, value = tol.propagated_variance(lambda *a: block.output(list(a[:len(hs)]), a[len(hs)] if s is not None else None),
                                               list(hs) + ([] if s is None else [s]), [scales], entry_dims=2)
            assert torch.equal(value, plain), f"{name} block {l} in {dtype}"


def test_dense_at_chosen_entries_is_dense_there_and_factored_elsewhere():
    """``updated_inputs(..., dense=mask)``: bit for bit the materialised ``W + dW`` at the mask's
    entries and the factored form at the others (``identity_errors`` checks the last position
    with the matrix the query-alone run uses)."""
    from icl_verify.updates import updated_inputs

    block = build_block("gru", "pre_ln", d=8, seed=0, dtype=torch.float32)
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(3))
    upd = position_updates(block, x)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, -1] = True
    mixed, dense, factored = (updated_inputs(block, upd, dense=d)[0] for d in (mask, True, False))
    for h, hd, hf in zip(mixed, dense, factored):
        assert torch.equal(h[mask], hd[mask]) and torch.equal(h[~mask], hf[~mask])
        assert not torch.equal(hd[mask], hf[mask])  # the two forms round apart here: the test can tell
