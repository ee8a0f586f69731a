"""Fast prefix dynamics and all-position updates (icl_verify.prefix_cache) against the generic methods:
every registered layer with a fast path, every composition, stacks, fallbacks, errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from icl_verify.blocks import Block, Stack, build_block, build_stack, get_composition, list_compositions
from icl_verify.dynamics import prefix_updates
from icl_verify.errors import DTypeError, EmptyContextError, ShapeError
from icl_verify.prefix_cache import fast_prefix_updates, has_fast_path, stack_prefix_updates
from icl_verify.layers import get_layer, list_layers
from icl_verify.networks import MLP
from icl_verify.updates import position_updates, stack_updates

N = 7  # longer than Griffin's attention window (4) and the convolution kernels (4)
EPS = torch.finfo(torch.float64).eps
torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine


def width(name: str) -> tuple[int, int]:
    info = get_layer(name)
    heads = info.heads[-1]
    return next(d for d in info.valid_dims(heads) if d >= 6), heads


def tokens(b: int, t: int, d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g, dtype=torch.float64).to(dtype)


def assert_close(a: torch.Tensor | None, b: torch.Tensor | None, k: float = 64.0, eps: float = EPS):
    """``|a - b| <= k eps (max|b| + 1)``: rounding-level agreement, nothing looser."""
    assert (a is None) == (b is None)
    if a is None:
        return
    assert a.shape == b.shape
    err, bound = (a - b).abs().max().item(), k * eps * (b.abs().max().item() + 1.0)
    assert err <= bound, f"error {err:.3g} > bound {bound:.3g}"


def assert_same_update(fast, generic, **kw):
    for u, v in zip(fast.left, generic.left, strict=True):
        assert_close(u, v, **kw)
    assert_close(fast.right, generic.right, **kw)
    assert_close(fast.shift, generic.shift, **kw)
    assert_close(fast.target.z, generic.target.z, **kw)
    assert_close(fast.target.s, generic.target.s, **kw)
    assert_close(fast.reference.z, generic.reference.z, **kw)


def test_every_builtin_layer_has_a_fast_path():
    for name in list_layers(builtin=True):
        d, heads = width(name)
        assert has_fast_path(build_block(name, "pre_ln", d, heads=heads)), name


@pytest.mark.parametrize("composition", list_compositions())
@pytest.mark.parametrize("name", list_layers(builtin=True))
def test_fast_prefix_updates_equal_generic(name, composition):
    d, heads = width(name)
    block = build_block(name, composition, d, heads=heads, seed=3)
    if not has_fast_path(block):
        pytest.skip(f"{name} has no fast path")
    x = tokens(2, N + 1, d)
    fast = fast_prefix_updates(block, x[:, :-1], x[:, -1])
    generic = prefix_updates(block, x[:, :-1], x[:, -1])
    assert fast.right.shape[:2] == (2, N + 1)
    assert_same_update(fast, generic)


def test_fast_prefix_updates_float32():
    block = build_block("softmax_attention_rope", "pre_ln", 8, heads=2, dtype=torch.float32)
    x = tokens(1, N + 1, 8, dtype=torch.float32)
    fast = fast_prefix_updates(block, x[:, :-1], x[:, -1])
    generic = prefix_updates(block, x[:, :-1], x[:, -1])
    assert_same_update(fast, generic, eps=torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("composition", ["pre_ln", "post_ln"])
@pytest.mark.parametrize("name", list_layers(builtin=True))
def test_stack_prefix_updates_equal_generic(name, composition):
    d, heads = width(name)
    stack = build_stack(name, composition, d, 3, heads=heads, seed=5)
    x = tokens(2, N + 1, d, seed=1)
    fast = stack_prefix_updates(stack, x[:, :-1], x[:, -1])
    generic = stack_prefix_updates(stack, x[:, :-1], x[:, -1], fast=False)
    assert len(fast) == len(generic) == 3
    for f, g in zip(fast, generic):
        assert_same_update(f, g)


def test_stack_prefix_entry_is_stack_update_of_that_prefix():
    stack = build_stack("gru", "pre_rms", 6, 3, seed=2)
    x = tokens(1, N + 1, 6, seed=4)
    fast = stack_prefix_updates(stack, x[:, :-1], x[:, -1])
    for i in (0, 4, N):
        seq = torch.cat([x[:, :i], x[:, -1:]], dim=1)
        for l, upd in enumerate(stack_updates(stack, seq)):
            assert_close(fast[l].left[0][:, i], upd.left[0])
            assert_close(fast[l].right[:, i], upd.right)
            assert_close(fast[l].shift[:, i], upd.shift)


class Plain(nn.Module):
    """A layer without ``states``/``step``: the fast path must fall back."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.inner = layer

    def forward(self, x):
        return self.inner(x)


def plain_block(d: int, seed: int) -> Block:
    torch.manual_seed(seed)
    layer = Plain(get_layer("softmax_attention").build(d, heads=2, seed=seed))
    return Block(layer, MLP(d, 2 * d), get_composition("pre_ln"), d).double()


def test_fallback_without_fast_path():
    block = plain_block(6, 0)
    assert not has_fast_path(block)
    x = tokens(2, N + 1, 6)
    assert_same_update(fast_prefix_updates(block, x[:, :-1], x[:, -1]),
                       prefix_updates(block, x[:, :-1], x[:, -1]))
    stack = Stack([build_block("gru", "pre_ln", 6, seed=1), plain_block(6, 1),
                   build_block("mamba", "pre_ln", 6, seed=2)])
    fast = stack_prefix_updates(stack, x[:, :-1], x[:, -1])
    generic = stack_prefix_updates(stack, x[:, :-1], x[:, -1], fast=False)
    for f, g in zip(fast, generic):
        assert_same_update(f, g)


@pytest.mark.parametrize("reference", ["token", "query"])
@pytest.mark.parametrize("name", ["softmax_attention_rope", "gru", "griffin_recurrent", "mamba"])
def test_all_position_updates_equal_per_block_updates(name, reference):
    """stack_updates (one forward, z and s kept on the way) against position_updates on each
    block's input from separate forward passes, and its last position against every_position=False."""
    d, heads = width(name)
    stack = build_stack(name, "post_ln", d, 3, heads=heads, seed=1)
    x = tokens(2, N, d, seed=7)
    every = stack_updates(stack, x, reference=reference, every_position=True)
    per_block = [position_updates(b, xl, reference=reference)
                 for b, xl in zip(stack.blocks, stack.block_inputs(x))]
    for f, g in zip(every, per_block):
        assert_same_update(f, g)
    for f, g in zip(stack_updates(stack, x), every):  # at the last position both references agree
        assert_same_update(f, g[:, -1])


def test_all_position_updates_stay_factored():
    """Memory O(T (m + d)) per block: no tensor of the result has a (m, d) pair of axes."""
    t, d = 33, 8
    stack = build_stack("softmax_attention", "gated", d, 2, heads=2)
    for upd in stack_updates(stack, tokens(1, t, d), every_position=True):
        tensors = [*upd.left, upd.right, upd.shift, upd.target.z, upd.target.s,
                   upd.reference.z, upd.reference.s]
        assert all(u.ndim == 3 and u.shape[:2] == (1, t) for u in tensors)
        assert sum(u.numel() for u in tensors) <= t * (sum(u.shape[-1] for u in upd.left) + 6 * d)


def test_errors():
    block = build_block("gru", "pre_ln", 6)
    x = tokens(2, 4, 6)
    with pytest.raises(EmptyContextError):
        fast_prefix_updates(block, x[:, :0], x[:, -1])
    with pytest.raises(ShapeError):
        fast_prefix_updates(block, x[:1], x[:, -1])
    with pytest.raises(DTypeError):
        fast_prefix_updates(block, x.float(), x[:, -1].float())
    stack = build_stack("gru", "pre_ln", 6, 2)
    with pytest.raises(EmptyContextError):
        stack_prefix_updates(stack, x[:, :0], x[:, -1])
    with pytest.raises(ShapeError):
        stack_updates(stack, x[:, :0], every_position=True)
    with pytest.raises(ValueError):
        stack_updates(stack, x, reference="middle", every_position=True)
