"""The baseline: one plain forward pass of a 4-block stack over the whole sequence."""
from .common import Short, STACKS, make_stack, setup_torch, tokens


class Forward(Short):
    params = (list(STACKS), [128, 1024, 4096])
    param_names = ["stack", "T"]

    def setup(self, kind, t):
        setup_torch()
        if kind != "attention" and t > 1024:
            raise NotImplementedError("recurrent stacks are timed up to T=1024")
        self.stack, self.x = make_stack(kind), tokens(t)

    def time_forward(self, kind, t):
        self.stack(self.x)

    def peakmem_forward(self, kind, t):
        self.stack(self.x)
