"""Implicit updates: one full-context update of a block, and every position of every block."""
import torch

from icl_verify.blocks import build_block
from icl_verify.updates import context_update, stack_updates

from .common import Short, StackOverSequence, setup_torch, tokens


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


class AllPositions(StackOverSequence):
    """Every position's update in every block of a 4-block stack (factored, reference=token)."""

    def time_all_positions(self, kind, t):
        stack_updates(self.stack, self.x, every_position=True)

    def peakmem_all_positions(self, kind, t):
        stack_updates(self.stack, self.x, every_position=True)
