"""The baseline: one plain forward pass of a 4-block stack over the whole sequence."""
from .common import StackOverSequence


class Forward(StackOverSequence):

    def time_forward(self, kind, t):
        self.stack(self.x)

    def peakmem_forward(self, kind, t):
        self.stack(self.x)
