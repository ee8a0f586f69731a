"""Seeded construction that leaves the caller's random state alone."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block of code under ``torch.manual_seed(seed)`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
