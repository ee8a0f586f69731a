"""In-context linear regression prompts (both papers' setting).

A prompt draws a task vector ``w ~ N(0, I_d)``, examples ``x_i ~ N(0, I_d)`` with labels
``y_i = <w, x_i>`` and a query ``x ~ N(0, I_d)``. Each example is one token ``(x_i, y_i)`` in
``R^(d+1)``; the query token is ``(x, 0)``; the model's prediction is the last coordinate of
its output at the query's position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ShapeError


@dataclass(frozen=True)
class Prompts:
    """A batch of regression prompts.

    Attributes:
        context: example tokens ``(x_i, y_i)``, shape ``(B, n, d+1)``.
        query: query tokens ``(x, 0)``, shape ``(B, d+1)``.
        target: the query's label ``<w, x>``, shape ``(B,)``.
        w: the task vectors, shape ``(B, d)``.
    """

    context: torch.Tensor
    query: torch.Tensor
    target: torch.Tensor
    w: torch.Tensor

    def tokens(self) -> torch.Tensor:
        """The whole sequence, context then query: ``(B, n+1, d+1)``."""
        return torch.cat([self.context, self.query[:, None]], dim=1)

    def prefix(self, i: int) -> "Prompts":
        """The same prompts with only the first ``i`` examples: context ``(B, i, d+1)``."""
        return Prompts(self.context[:, :i], self.query, self.target, self.w)

    def example_queries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each example presented as a query: tokens ``(x_i, 0)`` ``(B, n, d+1)`` and labels
        ``y_i`` ``(B, n)`` (what explicit finetuning trains on)."""
        q = self.context.clone()
        q[..., -1] = 0
        return q, self.context[..., -1]


@dataclass(frozen=True)
class RegressionTask:
    """Noise-free linear regression in dimension ``d`` with ``n`` context examples."""

    d: int = 2
    n: int = 50

    def __post_init__(self):
        if self.d < 1 or self.n < 1:
            raise ShapeError(f"need d >= 1 and n >= 1, got d={self.d}, n={self.n}")

    @property
    def width(self) -> int:
        """Token width ``d + 1``."""
        return self.d + 1

    def sample(self, batch: int, generator: torch.Generator, *, dtype: torch.dtype = torch.float64,
               n: int | None = None) -> Prompts:
        """``batch`` fresh prompts drawn with ``generator`` (``n`` examples each, default ``self.n``)."""
        n = self.n if n is None else n
        w = torch.randn(batch, self.d, generator=generator, dtype=dtype)
        x = torch.randn(batch, n + 1, self.d, generator=generator, dtype=dtype)
        y = torch.einsum("bnd,bd->bn", x, w)
        context = torch.cat([x[:, :n], y[:, :n, None]], dim=-1)
        query = torch.cat([x[:, n], torch.zeros(batch, 1, dtype=dtype)], dim=-1)
        return Prompts(context, query, y[:, n], w)
