"""Implicit updates: one full-context update of a block, and every position of every block."""
import torch

from icl_verify.blocks import build_block
from icl_verify.updates import context_update, stack_updates

from .common import Short, STACKS, make_stack, setup_torch, tokens


class ContextUpdate(Short):
    """The theorem's update for one query after a context of ``n`` tokens, one block."""

    params = ([64, 1024],)
    param_names = ["n"]

    def setup(self, n):
        setup_torch()
        self.block = build_block("softmax_attention", "pre_ln", 64, heads=4, dtype=torch.float32)
        x = tokens(n + 1)
        self.context, self.query = x[:, :-1], x[:, -1]

    def time_context_update(self, n):
        context_update(self.block, self.context, self.query)


class AllPositions(Short):
    """Every position's update in every block of a 4-block stack (factored, reference=token)."""

    params = (list(STACKS), [128, 1024, 4096])
    param_names = ["stack", "T"]

    def setup(self, kind, t):
        setup_torch()
        if kind != "attention" and t > 1024:
            raise NotImplementedError("recurrent stacks are timed up to T=1024")
        self.stack, self.x = make_stack(kind), tokens(t)
        self.fast = lambda stack, x: stack_updates(stack, x, every_position=True)

    def time_all_positions(self, kind, t):
        self.fast(self.stack, self.x)

    def peakmem_all_positions(self, kind, t):
        self.fast(self.stack, self.x)
