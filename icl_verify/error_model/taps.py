"""Taps inside a map (docs/error-model.md, "layer_norm_mean" and "map_underflow"): roundings that no
perturbation of the map's inputs represents, as zero leaves added to chosen results so that a
reverse pass gives the map's sensitivity to them, each with the standard-deviation scale ``r`` of
its rounding: a layer norm's mean (:func:`layer_norm_mean_scale`) and, in float16, ``eta`` at every
result (gradual underflow)."""
from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from .primitives import rho, underflow, unit_roundoff


class MapTaps(TorchFunctionMode):
    """A mode within which every ``layer_norm`` result, and in float16 every other result with the
    leading dims ``entries`` and one more that requires grad and is not a view, returns plus a zero
    leaf tap; ``taps`` and ``scales`` list the taps and their scales ``r`` (the results' shapes, in
    float32 at least). ``dtype``: the map's dtype, whose ``eta`` the underflow taps carry."""

    def __init__(self, entries: torch.Size, dtype: torch.dtype):
        super().__init__()
        self.entries = tuple(entries)
        self.eta = underflow(dtype)
        self.taps: list[torch.Tensor] = []
        self.scales: list[torch.Tensor] = []

    def _scale(self, func, out: torch.Tensor, args, kwargs) -> torch.Tensor | None:
        if getattr(func, "__name__", "") == "layer_norm":
            scale = layer_norm_mean_scale(*args, **kwargs)
            return scale + self.eta if self.eta else scale
        if self.eta and out.requires_grad and not out._is_view() and out.ndim > len(self.entries) \
                and tuple(out.shape[:len(self.entries)]) == self.entries:
            return torch.full((), self.eta, dtype=torch.promote_types(out.dtype, torch.float32),
                              device=out.device).expand(out.shape)
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return out
        scale = self._scale(func, out, args, kwargs)
        if scale is None:
            return out
        self.scales.append(scale)
        tap = torch.zeros_like(out, requires_grad=True)
        self.taps.append(tap)
        return out + tap


def layer_norm_mean_scale(v, normalized_shape, weight=None, bias=None, eps=1e-5) -> torch.Tensor:
    """``r`` of the mean's rounding in ``layer_norm(v, normalized_shape, weight, bias, eps)``
    (module docstring), same shape as ``v``, in float32 at least."""
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
