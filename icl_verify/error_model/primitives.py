"""The error model's primitives (docs/error-model.md, "Notation"): unit roundoffs, the worst-case
and probabilistic constants of a sum, gradual underflow, and the norms and products every term is
built from. This module imports nothing else from the package."""
from __future__ import annotations

from typing import Sequence

import torch

TAIL = 5.0
"""``lambda``: the tolerance is ``TAIL`` standard deviations of the modelled rounding."""


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2`` of a floating dtype."""
    return torch.finfo(dtype).eps / 2


def accumulation_roundoff(dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``u_acc``: the unit roundoff in which PyTorch accumulates matrix products and reductions of
    ``dtype`` on ``device``: float32 for bfloat16 and float16 (CPU always; CUDA unless
    ``torch.backends.cuda.matmul.allow_{bf16,fp16}_reduced_precision_reduction`` is set), else ``u``."""
    flag = {torch.bfloat16: "allow_bf16_reduced_precision_reduction",
            torch.float16: "allow_fp16_reduced_precision_reduction"}.get(dtype)
    if flag is None or (torch.device(device).type == "cuda"
                        and getattr(torch.backends.cuda.matmul, flag, False)):
        return unit_roundoff(dtype)
    return unit_roundoff(torch.float32)


def gamma(n: int, dtype: torch.dtype) -> float:
    """``gamma(n) = n u / (1 - n u)``: the relative error bound of an ``n``-term sum."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma({n}) is undefined in {dtype}: n u >= 1")
    return nu / (1 - nu)


def chain_bound(stored: int, summed: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``c(k, n) = (1 + u)^k (1 + gamma_acc(n)) - 1``: the worst-case relative error of ``k = stored``
    roundings to ``dtype`` and one ``n = summed``-term accumulation in ``u_acc``
    (Higham, *Accuracy and Stability*, Lemma 3.3)."""
    n_u = summed * accumulation_roundoff(dtype, device)
    if n_u >= 1:
        raise ValueError(f"the rounding bound of a {summed}-term sum is undefined in {dtype}: n u_acc >= 1")
    return (1 + unit_roundoff(dtype)) ** stored * (1 + n_u / (1 - n_u)) - 1


def rho(n: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``rho(n) = sqrt(n) u_acc``: the standard deviation of an ``n``-term sum's accumulated rounding
    relative to the scale of its partial sums, under independent mean-zero roundings (Higham & Mary,
    SIAM J. Sci. Comput. 2019)."""
    return n ** 0.5 * accumulation_roundoff(dtype, device)


def half_subnormal_spacing(dtype: torch.dtype) -> float:
    """Half the spacing of ``dtype``'s subnormal numbers: ``smallest_normal * eps / 2``."""
    fi = torch.finfo(dtype)
    return fi.smallest_normal * fi.eps / 2


def underflow(dtype: torch.dtype) -> float:
    """``eta``: the absolute error a product, quotient or stored accumulation landing among the
    subnormals may add (half their spacing); 0 where ``eta^2`` vanishes in the model's own float32
    arithmetic (every dtype but float16)."""
    eta = half_subnormal_spacing(dtype)
    # eta^2 rounds to 0 in that arithmetic when it is at most half its smallest subnormal
    return eta if eta * eta > half_subnormal_spacing(torch.promote_types(dtype, torch.float32)) else 0.0


def wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 at least: the model's own arithmetic on bfloat16/float16 values."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def abs_matvec(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``|W| |z|``: ``w`` ``(m, d)``, ``z`` ``(..., d)`` -> ``(..., m)``."""
    return z.abs() @ w.abs().T


def entry_norm(*tensors: torch.Tensor | None, entry_dims: int) -> torch.Tensor:
    """Euclidean norm over everything but the ``entry_dims`` leading dims, jointly over tensors;
    entries whose sum of squares overflows or underflows are recomputed scaled by their largest
    magnitude."""
    flat = [t.flatten(entry_dims) for t in tensors if t is not None]
    n = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t, dim=-1) for t in flat]), dim=0)
    fi = torch.finfo(n.dtype)
    bad = ~torch.isfinite(n) | (n < fi.tiny ** 0.5 / fi.eps)
    if bad.any():
        n = torch.where(bad, _scaled_norm(flat, entry_dims), n)
    return n


def _scaled_norm(flat: Sequence[torch.Tensor], entry_dims: int) -> torch.Tensor:
    m = entry_max(flat, entry_dims)
    return m * sum(((t / m[..., None]) ** 2).sum(-1) for t in flat).sqrt()


def entry_max(ts: Sequence[torch.Tensor], entry_dims: int) -> torch.Tensor:
    """Largest magnitude per entry over the tensors ``(*E, ...)``: ``(*E,)``, 1 where all are 0."""
    m = torch.stack([t.flatten(entry_dims).abs().amax(-1) for t in ts]).amax(0)
    return torch.where(m > 0, m, torch.ones_like(m))
