"""Cosine similarity of weight changes (the figures and the LLM analysis compare updates by it)."""
from __future__ import annotations

import torch


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a, b> / (||a|| ||b||)`` over the last axis, broadcasting the others: ``(...)``;
    0 where either vector is zero."""
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(torch.finfo(den.dtype).tiny),
                       torch.zeros_like(den))
