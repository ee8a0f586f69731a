"""Monte Carlo arithmetic: samples of the rounding error of any torch computation (docs/error-model.md,
"decomposition"). Under :class:`MonteCarloArithmetic` every operation that may round (all but the
exact operations of :data:`EXACT`) multiplies each floating operand and result by ``1 + 2u xi``,
``xi = +-1`` per element (Parker's "full" Monte Carlo arithmetic); fused normalisations run as
their textbook steps (:data:`DECOMPOSED`)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode

from .primitives import unit_roundoff

EXACT = frozenset({
    "__getitem__", "__setitem__", "__get__", "__len__", "__iter__", "__repr__", "__format__",
    "__bool__", "__float__", "__int__", "__index__", "size", "dim", "numel", "shape", "dtype",
    "device", "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute",
    "transpose", "t", "T", "mT", "contiguous", "clone", "detach", "cat", "concat", "concatenate",
    "stack", "select", "narrow", "expand", "expand_as", "unsqueeze", "squeeze", "split", "chunk",
    "unbind", "movedim", "to", "type", "type_as", "neg", "__neg__", "abs", "zeros_like",
    "ones_like", "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full",
    "new_tensor", "pad", "roll", "flip", "repeat", "tile", "gather", "index_select",
    "masked_fill", "where", "tril", "triu", "diagonal", "is_floating_point", "requires_grad_",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "eq", "ne", "lt", "le", "gt", "ge",
    "isfinite", "isnan", "all", "any", "item", "tolist", "dropout", "copy_", "fill_", "zero_",
})
"""Names of operations that never round (data movement, comparisons, sign changes)."""


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    c = x - x.mean(dims, keepdim=True)
    y = c * torch.rsqrt((c * c).mean(dims, keepdim=True) + eps)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(normalized_shape), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt((x * x).mean(dims, keepdim=True) + eps)
    return y if weight is None else y * weight


DECOMPOSED = {"layer_norm": _layer_norm, "rms_norm": _rms_norm}
"""Fused normalisations, evaluated under :class:`MonteCarloArithmetic` as their textbook sequence of
operations so that each intermediate rounds: the rounding of a layer norm's mean costs
``u |mean| / std`` in its output, which perturbing only the fused kernel's operands and result
cannot show (its operands' roundings move every component alike, and the norm removes that)."""


class MonteCarloArithmetic(TorchFunctionMode):
    """Within this context every rounding torch operation perturbs its floating operands and
    results by ``2u`` of their dtype (relative), of random sign (from ``generator``)."""

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.generator = generator

    def _round(self, t):
        if not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()):
            return t
        sign = (2 * torch.randint(0, 2, t.shape, generator=self.generator) - 1).to(t.device, t.dtype)
        return t * (1 + 2 * unit_roundoff(t.dtype) * sign)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in EXACT or name.endswith("_") and name[:-1] in EXACT:
            return func(*args, **kwargs)
        if name in DECOMPOSED:
            with self:  # the textbook steps, each rounding under this mode
                return DECOMPOSED[name](*args, **kwargs)
        args = tuple(self._round(a) for a in args)
        out = func(*args, **kwargs)
        if isinstance(out, (tuple, list)):
            return type(out)(self._round(o) for o in out)
        return self._round(out)


def monte_carlo_samples(fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], x: torch.Tensor,
                     samples: int, *, seed: int = 0) -> list[torch.Tensor]:
    """``samples`` draws of ``fn_mca(x) - fn(x)`` in one batched evaluation: ``fn`` maps ``x``
    ``(*E, n)`` to tensors ``(*E, p_j)`` and treats leading dims independently; returns one
    tensor ``(samples, *E, p_j)`` per output of ``fn``."""
    with torch.no_grad():
        exact = fn(x)
        with MonteCarloArithmetic(torch.Generator().manual_seed(seed)):
            drawn = fn(x.expand(samples, *x.shape))
    return [d - e for d, e in zip(drawn, exact)]
