"""Example-based tests of the core: a case worked by hand, compositions against direct
implementations, the update API, and every typed error on bad input."""
import pytest
import torch
from torch import nn

import icl_verify as iv
from icl_verify import claims
from icl_verify.blocks import Block, get_composition
from icl_verify.dynamics import increments, prefix_updates, sgd_steps
from icl_verify.networks import MLP

F64 = torch.float64


class CumSum(nn.Module):
    """``A(X)_t = sum_{j<=t} x_j``: the simplest contextual layer."""

    def forward(self, x):
        return x.cumsum(dim=1)


def hand_block(composition="none"):
    """d = 1, hidden 1: W = 5, b = 0.5, then relu and a second layer 2 h + 0."""
    mlp = MLP(1, 1, act="relu")
    with torch.no_grad():
        mlp.first[0].weight.fill_(5.0)
        mlp.first[0].bias.fill_(0.5)
        mlp.later[0].weight.fill_(2.0)
        mlp.later[0].bias.fill_(0.0)
    return Block(CumSum(), mlp, get_composition(composition), 1).to(F64)


def test_one_dimensional_case_by_hand():
    block = hand_block()
    context = torch.tensor([[[1.0]]], dtype=F64)  # c_1 = 1
    query = torch.tensor([[2.0]], dtype=F64)  # x = 2: A(x) = 2, A(C, x) = 3
    upd = iv.context_update(block, context, query)
    # dW = W (z_C - z_x) z_x / z_x^2 = 5 * 1 * 2 / 4 = 2.5
    assert upd.dense()[0].item() == pytest.approx(2.5, abs=0)
    assert upd.shift is None
    # with context: 2 * relu(5 * 3 + 0.5) = 31; query alone with W + dW: 2 * relu(7.5 * 2 + 0.5) = 31
    assert iv.target_output(block, upd).item() == 31.0
    assert iv.run_updated(block, query, upd).item() == 31.0
    # without the update the query alone gives 2 * relu(10.5) = 21
    assert block(query[:, None]).item() == 21.0


def test_one_dimensional_residual_shift_by_hand():
    block = hand_block("residual")
    context = torch.tensor([[[1.0]]], dtype=F64)
    query = torch.tensor([[2.0]], dtype=F64)
    upd = iv.context_update(block, context, query)
    # z = s = x + A: with context 2 + 3 = 5, alone 2 + 2 = 4; dW = 5 * 1 * 4 / 16 = 1.25, ds = 1
    assert upd.dense()[0].item() == 1.25
    assert upd.shift.item() == 1.0
    assert iv.run_updated(block, query, upd).item() == 5 + 2 * (5 * 5 + 0.5)


def test_dynamics_by_hand():
    block = hand_block()
    context = torch.tensor([[[1.0], [3.0]]], dtype=F64)
    query = torch.tensor([[2.0]], dtype=F64)  # z_0 = 2, z_1 = 3, z_2 = 6
    upd = prefix_updates(block, context, query)
    dense = upd.dense()[0].reshape(-1)
    assert dense.tolist() == [0.0, 2.5, 5 * 4 * 2 / 4]
    assert [x.item() for x in increments(block, upd)[0].reshape(-1)] == [2.5, 7.5]
    # SGD: W_1 = W_0 - h D_0, h = 1/4, D_0 = W (z_0 - z_1) z_x = 5 * (-1) * 2 = -10
    assert sgd_steps(block, upd)[0].reshape(-1).tolist() == [5 + 2.5, 7.5 + 7.5]


# -- compositions against direct implementations (written from the docs/theory.md §1 table) --

def direct(block: Block, x: torch.Tensor) -> torch.Tensor:
    A, f = block.layer, block.network
    name = block.composition.name
    if name == "none":
        return f(A(x))
    if name == "residual":
        return x + A(x) + f(x + A(x))
    if name in ("pre_ln", "pre_rms", "gated"):
        h = x + A(block.norm1(x))
        return h + f(block.norm2(h))
    if name == "post_ln":
        h = block.norm1(x + A(x))
        return block.norm2(h + f(h))
    if name == "parallel":
        return x + A(block.norm1(x)) + f(block.norm1(x))
    raise AssertionError(name)


@pytest.mark.parametrize("composition", iv.list_compositions())
def test_composition_matches_direct_implementation(composition):
    block = iv.build_block("softmax_attention", composition, 8, heads=2, seed=1)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(block(x), direct(block, x), rtol=1e-13, atol=1e-13)


def test_norms_are_the_named_kind():
    assert isinstance(iv.build_block("gru", "pre_ln", 4).norm1, nn.LayerNorm)
    assert isinstance(iv.build_block("gru", "pre_rms", 4).norm2, nn.RMSNorm)
    assert len(iv.build_block("gru", "gated", 4).first_layers()) == 2


# -- the update API --

def data(b=2, n=4, d=8, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


def test_factored_and_dense_agree_and_rank_one():
    block = iv.build_block("gru", "gated", 8, seed=2)
    context, query = data()
    upd = iv.context_update(block, context, query)
    for dw in upd.dense():
        assert torch.linalg.matrix_rank(dw).max() <= 1
    torch.testing.assert_close(iv.apply_update(block, upd, dense=True), iv.apply_update(block, upd, dense=False))
    assert torch.allclose(upd.norms(), torch.stack([d.norm(dim=(-2, -1)) for d in upd.dense()], -1))


def test_parallel_block_update_is_bypass_only():
    block = iv.build_block("softmax_attention", "parallel", 8, seed=2)
    context, query = data()
    upd = iv.context_update(block, context, query)
    assert all((dw == 0).all() for dw in upd.dense())
    assert upd.shift.abs().max() > 0


def test_stack_identity_and_every_position():
    stack = iv.build_stack("mamba", "pre_rms", 8, 4, seed=3)
    context, query = data()
    x = torch.cat([context, query[:, None]], 1)
    assert claims.stack(stack, x).passed
    ups = iv.stack_updates(stack, x, every_position=True)
    assert ups[0].right.shape == (2, 5, 8)
    assert claims.positions(stack.blocks[0], x, "query").passed


def test_subset_of_everything_is_theorem_and_empty_subset_is_zero():
    block = iv.build_block("lstm", "post_ln", 8, seed=4)
    context, query = data()
    full = iv.context_update(block, context, query)
    everything = iv.subset_update(block, context, query, torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(everything.dense()[0], full.dense()[0])
    nothing = iv.subset_update(block, context, query, torch.zeros(4, dtype=torch.bool))
    assert (nothing.dense()[0] == 0).all() and (nothing.shift == 0).all()


# -- bad input: each typed error --

def test_degenerate_query_names_block_and_position():
    block = iv.build_block("softmax_attention", "none", 8, seed=0)  # bias-free: A(0) = 0
    context, _ = data()
    with pytest.raises(iv.DegenerateReferenceError, match=r"z_r is zero.*block 3, position 4"):
        iv.context_update(block, context, torch.zeros(2, 8, dtype=F64), block_index=3)


def test_non_finite_inputs():
    block = iv.build_block("gru", "residual", 8)
    context, query = data()
    bad = context.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(iv.NonFiniteError, match="context holds NaN or inf.*position 2"):
        iv.context_update(block, bad, query)
    with pytest.raises(iv.NonFiniteError, match="query"):
        iv.context_update(block, context, query * float("inf"))


def test_shape_and_dtype_errors():
    block = iv.build_block("gru", "residual", 8)
    context, query = data()
    with pytest.raises(iv.ShapeError, match="query must have 2 dimensions"):
        iv.context_update(block, context, query[:, None])
    with pytest.raises(iv.ShapeError, match="last size 8"):
        iv.context_update(block, context[..., :4], query)
    with pytest.raises(iv.ShapeError, match="batch"):
        iv.context_update(block, context[:1], query)
    with pytest.raises(iv.DTypeError, match="float32 but the block's parameters are torch.float64"):
        iv.context_update(block, context.float(), query)
    with pytest.raises(iv.DTypeError, match="floating"):
        iv.context_update(block, context.long(), query.long())
    with pytest.raises(iv.ShapeError, match="boolean mask"):
        iv.subset_update(block, context, query, torch.ones(3, dtype=torch.bool))


def test_empty_context():
    block = iv.build_block("gru", "residual", 8)
    context, query = data(n=0)
    assert (iv.context_update(block, context, query).dense()[0] == 0).all()  # theorem: dW = 0
    with pytest.raises(iv.EmptyContextError, match="at least one token"):
        prefix_updates(block, context, query)


def test_registry_errors():
    with pytest.raises(iv.UnknownLayerError, match="no layer named 'nope'"):
        iv.get_layer("nope")
    with pytest.raises(iv.DuplicateLayerError, match="already registered"):
        iv.register_layer("gru", lambda d, *, heads: CumSum())
    with pytest.raises(iv.UnknownLayerError, match="no composition"):
        iv.get_composition("sideways")
    with pytest.raises(iv.ShapeError, match="divisible"):
        iv.get_layer("softmax_attention").build(7, heads=2)
    assert "gru" in iv.list_layers("g*") and "lstm" not in iv.list_layers("g*")
