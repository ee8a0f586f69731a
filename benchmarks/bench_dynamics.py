"""Prefix dynamics ``W_1..W_n`` of every block of a 4-block stack: fast (one forward of the
context plus one batched step) against generic (one forward pass per prefix)."""
from .common import Short, STACKS, fast_module, make_stack, setup_torch, tokens

#: largest n at which the generic method is still timed (it costs O(n) forward passes)
GENERIC_MAX = {"attention": 256, "gru": 64, "griffin": 64, "gated_deltanet": 64, "mamba2": 64}


class Prefix(Short):
    """Shared set-up: a 4-block stack, a context of n tokens and a query."""

    params = (list(STACKS), [64, 256, 1024, 4096])
    param_names = ["stack", "n"]

    def setup(self, kind, n):
        setup_torch()
        self.fast = fast_module()
        if kind != "attention" and n > 1024:
            raise NotImplementedError("recurrent stacks are timed up to n=1024")
        self.stack = make_stack(kind)
        x = tokens(n + 1)
        self.context, self.query = x[:, :-1], x[:, -1]


class PrefixDynamics(Prefix):
    def time_fast(self, kind, n):
        self.fast.stack_prefix_updates(self.stack, self.context, self.query)

    def peakmem_fast(self, kind, n):
        self.fast.stack_prefix_updates(self.stack, self.context, self.query)


class PrefixDynamicsGeneric(Prefix):
    def setup(self, kind, n):
        if n > GENERIC_MAX[kind]:
            raise NotImplementedError("generic method too slow at this n")
        super().setup(kind, n)

    def time_generic(self, kind, n):
        self.fast.stack_prefix_updates(self.stack, self.context, self.query, fast=False)
