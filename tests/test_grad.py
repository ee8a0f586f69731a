"""Updates carry an autograd graph only when their inputs ask for one: a module's parameters
require grad by default, and that alone must not make every update a graph."""
from __future__ import annotations

import pytest
import torch

from icl_verify import build_block, build_stack, context_update, position_updates, stack_updates
from icl_verify.dynamics import prefix_updates
from icl_verify.prefix_cache import fast_prefix_updates, stack_prefix_updates


def _tensors(update):
    yield from update.left
    yield update.right
    yield update.target.z


@pytest.mark.parametrize("compute", [
    lambda b, s, c, q: [context_update(b, c, q)],
    lambda b, s, c, q: [position_updates(b, torch.cat([c, q[:, None]], 1))],
    lambda b, s, c, q: [prefix_updates(b, c, q)],
    lambda b, s, c, q: [fast_prefix_updates(b, c, q)],
    lambda b, s, c, q: stack_updates(s, torch.cat([c, q[:, None]], 1)),
    lambda b, s, c, q: stack_prefix_updates(s, c, q),
], ids=["context", "positions", "prefix", "fast_prefix", "stack", "stack_prefix"])
def test_updates_follow_their_inputs(compute):
    block = build_block("softmax_attention", "pre_ln", 4, heads=1)
    stack = build_stack("gru", "residual", 4, 2)
    assert all(p.requires_grad for p in block.parameters())
    context, query = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    for upd in compute(block, stack, context, query):
        assert not any(t.requires_grad for t in _tensors(upd))
    context.requires_grad_(True)
    for upd in compute(block, stack, context, query):
        assert all(t.requires_grad for t in upd.left)
        (grad,) = torch.autograd.grad(upd.left[0].sum(), context, retain_graph=True)
        assert grad.abs().sum() > 0
