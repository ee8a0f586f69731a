"""Shared sizes, builders and helpers of the asv suites (numpy/scipy style).

Every benchmark fixes ``torch.set_num_threads(THREADS)`` in ``setup`` so numbers are comparable
across commits and machines, builds its models from fixed seeds, and skips itself (by raising
``NotImplementedError`` in ``setup``, asv's convention) on commits that lack what it measures.
"""
from __future__ import annotations

import torch

THREADS = 1
D = 64
DEPTH = 4
#: stack kind -> (registered layer, heads): the stacks of the speed targets.
STACKS = {"attention": ("softmax_attention", 4), "gru": ("gru", 1), "griffin": ("griffin_recurrent", 1),
          "gated_deltanet": ("gated_deltanet", 2), "mamba2": ("mamba2", 2)}


class Short:
    """asv sampling kept short (the machine is shared and history reruns every commit):
    one call per sample, up to 3 samples or 10 s, one round, no warm-up rounds."""

    number = 1
    repeat = (1, 3, 10.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 300


def setup_torch() -> None:
    torch.set_num_threads(THREADS)
    torch.set_grad_enabled(False)


def fast_module():
    """The module of the fast prefix path, ``icl_verify.prefix_cache`` (``icl_verify.fast`` on
    older commits), or skip the benchmark on a commit that predates both."""
    import importlib
    import os

    import icl_verify

    # an editable install can supply the work tree's module to an older exported tree
    here = os.path.dirname(os.path.abspath(icl_verify.__path__[0] + "/x"))
    for name in ("icl_verify.prefix_cache", "icl_verify.fast"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if os.path.dirname(os.path.abspath(module.__file__)) == here:
            return module
    raise NotImplementedError("the fast prefix path does not exist at this commit")


def make_stack(kind: str, *, d: int = D, depth: int = DEPTH, dtype=torch.float32):
    """A seeded stack of ``depth`` pre-LN blocks of the ``kind`` layer (see ``STACKS``)."""
    from icl_verify.blocks import build_stack

    layer, heads = STACKS[kind]
    return build_stack(layer, "pre_ln", d, depth, heads=heads, seed=0, dtype=dtype).eval()


def make_block(kind: str, *, d: int = D, dtype=torch.float32):
    """The first block of :func:`make_stack`."""
    return make_stack(kind, d=d, depth=1, dtype=dtype).blocks[0]


def tokens(t: int, *, d: int = D, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """``(1, t, d)`` standard normal tokens from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, t, d, generator=g, dtype=torch.float64).to(dtype)


class StackOverSequence(Short):
    """A 4-block stack of each kind and a sequence of ``T`` tokens (recurrent stacks up to 1024)."""

    params = (list(STACKS), [128, 1024, 4096])
    param_names = ["stack", "T"]

    def setup(self, kind, t):
        setup_torch()
        if kind != "attention" and t > 1024:
            raise NotImplementedError("recurrent stacks are timed up to T=1024")
        self.stack, self.x = make_stack(kind), tokens(t)
