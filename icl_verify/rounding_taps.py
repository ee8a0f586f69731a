"""Taps inside a map: roundings that no perturbation of the map's inputs represents
(docs/error-model.md, "A layer norm inside the map" and "Gradual underflow").

While :class:`rounding_taps` is active, chosen operation results get a zero leaf ``tap``
(``requires_grad``) added, with the standard-deviation scale ``r`` of their rounding per
component; a reverse pass then gives the map's sensitivity to each tap like to any of its
inputs. Two kinds:

- **A layer norm's mean.** ``y = (v - mean(v)) rstd gamma + beta`` over ``d`` components rounds
  its mean by about ``rho(d) q(1, v) / d + u_int |mean|`` (``q(1, v) = sqrt(sum v_j^2 + (sum v_j)^2)``,
  the scale of the sum's partial sums; ``u_int`` the unit roundoff the kernel computes in:
  float32 for bfloat16/float16) and evaluates ``v rstd - mean rstd`` with a rounding of
  ``u_int |v_i| rstd`` and ``u_int |mean| rstd``. Every component moves alike under the mean's
  rounding, a direction the norm removes from any perturbation of its input; where ``|mean|`` is
  many times the spread of ``v``, that rounding is many roundings of the output:

      r_i = |gamma_i| rstd (rho(d) q(1, v) / d + u_int (|v_i| + 2 |mean|)).

- **Gradual underflow.** A result that lands among the subnormal numbers errs by up to ``eta``
  (:func:`~icl_verify.tolerance.underflow`, half their spacing) whatever its size, which no
  relative term sees. Every result of the map that depends on its inputs, has the entry dims
  and at least one more, and is not a view gets ``r_i = eta``: an overcount of one ``eta`` for
  sums and exact operations. Only where ``eta^2`` is representable in the error model's
  float32/float64 arithmetic (float16); in the other dtypes the term rounds to zero there and
  no tap is made.
"""
from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from .tolerance import rho, underflow, unit_roundoff


class rounding_taps(TorchFunctionMode):  # noqa: N801 - used as a context manager
    """Within this context every ``layer_norm`` result, and in float16 every other result with
    the leading dims ``entries`` and at least one more that requires grad and is not a view,
    returns plus a zero leaf tap; ``self.taps`` and ``self.scales`` list the taps and their
    rounding scales ``r`` (same shapes as the results, in float32 at least).

    Args:
        entries: the map's leading (entry) dims ``E``.
        dtype: the map's dtype, whose ``eta`` the underflow taps carry.
    """

    def __init__(self, entries: torch.Size, dtype: torch.dtype):
        super().__init__()
        self.entries = tuple(entries)
        self.eta = underflow(dtype)
        self.taps: list[torch.Tensor] = []
        self.scales: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return out
        if getattr(func, "__name__", "") == "layer_norm":
            scale = _layer_norm_rounding(*args, **kwargs)
            if self.eta:
                scale = scale + self.eta
        elif self.eta and out.requires_grad and not out._is_view() and out.ndim > len(self.entries) \
                and tuple(out.shape[:len(self.entries)]) == self.entries:
            scale = torch.full((), self.eta, dtype=torch.promote_types(out.dtype, torch.float32),
                               device=out.device).expand(out.shape)
        else:
            return out
        self.scales.append(scale)
        tap = torch.zeros_like(out, requires_grad=True)
        self.taps.append(tap)
        return out + tap


def _layer_norm_rounding(v, normalized_shape, weight=None, bias=None, eps=1e-5) -> torch.Tensor:
    """``r`` of a layer norm's mean (module docstring) for ``layer_norm(v, normalized_shape, weight, bias, eps)``."""
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
