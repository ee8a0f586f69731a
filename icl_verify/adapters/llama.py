"""Tiny random Llama-family models (the records live in :mod:`~icl_verify.adapters.catalog`)."""
from __future__ import annotations

import torch
from torch import nn

from .records import tiny_causal_lm


def tiny_lm(kind: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random causal LM of model type ``kind`` (``"llama"``, ``"gemma"``, ``"gemma2"``,
    or any type with a record): width 32, 2 layers, 4 heads (2 key/value heads), vocabulary 64."""
    return tiny_causal_lm(kind, seed=seed, dtype=dtype)
