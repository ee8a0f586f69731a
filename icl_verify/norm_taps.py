"""Taps at the outputs of the layer norms inside a map: the rounding of a layer norm's computed
mean, which no perturbation of the map's inputs represents (docs/error-model.md, "A layer norm
inside the map").

A layer norm ``y = (v - mean(v)) rstd gamma + beta`` over ``d`` components rounds its mean by
about ``rho(d) q(1, v) / d + u_int |mean|`` (``q(1, v) = sqrt(sum v_j^2 + (sum v_j)^2)``, the
scale of the sum's partial sums; ``u_int`` the unit roundoff the kernel computes in: float32 for
bfloat16/float16) and evaluates ``v rstd - mean rstd`` with a rounding of ``u_int |v_i| rstd`` and
``u_int |mean| rstd``. Every component moves alike under the mean's rounding, a direction the
norm removes from any perturbation of its input; where ``|mean|`` is many times the spread of
``v``, that rounding is many roundings of the output. :class:`norm_taps` adds a zero tensor
(requiring grad) to the output of every ``layer_norm`` call while active and records the
standard-deviation scale of that rounding per output component:

    r_i = |gamma_i| rstd (rho(d) q(1, v) / d + u_int (|v_i| + 2 |mean|)).

A reverse pass then gives the map's sensitivity to each tap like to any of its inputs.
"""
from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from .tolerance import rho, unit_roundoff


class norm_taps(TorchFunctionMode):  # noqa: N801 - used as a context manager
    """Within this context every ``layer_norm`` returns its output plus a zero leaf ``tap``
    (``requires_grad``); ``self.taps`` and ``self.scales`` list the taps and their rounding
    scales ``r`` (same shapes as the outputs, in float32 at least)."""

    def __init__(self):
        super().__init__()
        self.taps: list[torch.Tensor] = []
        self.scales: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__name__", "") != "layer_norm" or not isinstance(out, torch.Tensor):
            return out
        self.scales.append(_layer_norm_rounding(*args, **kwargs))
        tap = torch.zeros_like(out, requires_grad=True)
        self.taps.append(tap)
        return out + tap


def _layer_norm_rounding(v, normalized_shape, weight=None, bias=None, eps=1e-5) -> torch.Tensor:
    """``r`` of the module docstring for ``layer_norm(v, normalized_shape, weight, bias, eps)``."""
    dims = tuple(range(-len(normalized_shape), 0))
    d = math.prod(normalized_shape)
    wide = torch.promote_types(v.dtype, torch.float32)
    u_int = unit_roundoff(wide)
    with torch.no_grad():
        x = v.detach().to(wide)
        total = x.sum(dims, keepdim=True)
        mean = total / d
        rstd = torch.rsqrt((x - mean).square().mean(dims, keepdim=True) + eps)
        q = (x.square().sum(dims, keepdim=True) + total.square()).sqrt()
        r = rstd * (rho(d, v.dtype, v.device) * q / d + u_int * (x.abs() + 2 * mean.abs()))
        return r if weight is None else r * weight.detach().to(wide).abs()
