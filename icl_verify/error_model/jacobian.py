"""The map's Jacobian, applied to the modelled roundings of its inputs (docs/error-model.md,
"Propagation"): ``||J diag(r)||_F^2`` exactly or by Rademacher probes, and the spectral norm that a
stack's propagation multiplies by."""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch

from ..errors import NonFiniteError
from .primitives import wide
from .taps import MapTaps

EXACT_WIDTH = 64
"""Outputs up to this width get the exact Jacobian (reverse mode); wider ones random probes."""

PROBES = 1
"""Rademacher probes (reverse passes) of ``||J diag(r)||_F^2`` for outputs wider than :data:`EXACT_WIDTH`:
one for both sides of an identity."""

PROBE_SEED = 0
"""Seed of the probes' Rademacher vectors."""

POWER_ITERATIONS = 20
"""Power-iteration steps of :func:`spectral_norm`; outputs at most twice as wide take the exact norm."""


def spectral_norm(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], *,
                  entry_dims: int, iterations: int = POWER_ITERATIONS) -> torch.Tensor:
    """Largest singular value of the Jacobian of ``fn`` at ``inputs``, per entry ``(*E,)``: ``fn`` maps
    tensors ``(*E, n_j)`` to ``(*E, p)``, entries independent. Power iteration (jvp and vjp) for outputs
    wider than ``2 * iterations``, else (or without forward-mode derivatives) the exact norm of the
    reverse-mode Jacobian."""
    inputs = tuple(x.detach() for x in inputs)
    sigma = _spectral_norm(fn, inputs, entry_dims, iterations)
    if not torch.isfinite(sigma).all():
        raise NonFiniteError("the Jacobian of the block's map is not finite here: the error model "
                             "cannot bound the rounding (an activation with an infinite slope?)")
    return sigma


def _spectral_norm(fn, inputs, entry_dims, iterations):
    with torch.no_grad():
        width = fn(*inputs).flatten(entry_dims).shape[-1]
    if width <= 2 * iterations:
        return _reverse_jacobian_norm(fn, inputs, entry_dims)
    try:
        return _power_iteration(fn, inputs, entry_dims, iterations)
    except NotImplementedError:
        return _reverse_jacobian_norm(fn, inputs, entry_dims)


def _entry_sq(ts: Sequence[torch.Tensor], entry_dims: int) -> torch.Tensor:
    return sum((t * t).flatten(entry_dims).sum(-1) for t in ts)


def _power_iteration(fn, inputs, entry_dims, iterations):
    _, vjp_fn = torch.func.vjp(fn, *inputs)
    v = tuple(torch.ones_like(x) for x in inputs)
    sigma = torch.zeros(inputs[0].shape[:entry_dims], dtype=inputs[0].dtype, device=inputs[0].device)
    tiny = torch.finfo(inputs[0].dtype).tiny
    for _ in range(iterations):
        nv = _entry_sq(v, entry_dims).sqrt().clamp_min(tiny)
        v = tuple(x / nv.reshape(nv.shape + (1,) * (x.ndim - entry_dims)) for x in v)
        jv = torch.func.jvp(fn, inputs, v)[1]
        sigma = jv.flatten(entry_dims).norm(dim=-1)
        v = vjp_fn(jv)
    return sigma


def _reverse_jacobian(fn, inputs, entry_dims, taps=None):
    """The Jacobian of ``fn`` at ``inputs``: ``(*E, p, n)``. One reverse pass batched over the ``p``
    output components (``is_grads_batched``, autograd's vmap); one pass per component where an
    operation has no batching rule. ``taps``: a :class:`~.taps.MapTaps` to
    evaluate ``fn`` under; its taps are then inputs too (columns after those of ``inputs``)."""
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)  # no copy: new leaves on the same storage
    with torch.enable_grad():
        with taps if taps is not None else contextlib.nullcontext():
            y = fn(*xs)
        xs = xs + _entry_taps(taps, y, entry_dims)
        flat = y.flatten(entry_dims)
        p = flat.shape[-1]
        try:
            eye = torch.eye(p, dtype=y.dtype, device=y.device)
            seeds = eye.reshape((p,) + (1,) * entry_dims + (p,)).expand((p,) + flat.shape).reshape((p,) + y.shape)
            batched = torch.autograd.grad(y, xs, seeds, retain_graph=True, allow_unused=True, is_grads_batched=True)
            per_row = [[None if g is None else g[j] for g in batched] for j in range(p)]
        except RuntimeError:
            per_row = [torch.autograd.grad(flat[..., j].sum(), xs, retain_graph=True, allow_unused=True)
                       for j in range(p)]
    rows = [torch.cat([(torch.zeros_like(x) if g is None else g).flatten(entry_dims) for g, x in zip(grads, xs)],
                      dim=-1) for grads in per_row]
    jac = torch.stack(rows, dim=-2)  # (*E, p, n)
    if not torch.isfinite(jac).all():
        raise NonFiniteError("the Jacobian of the block's map is not finite here (a value overflowed "
                             f"in {jac.dtype}): the error model cannot bound the rounding")
    return jac


def _entry_taps(taps, y: torch.Tensor, entry_dims: int) -> tuple[torch.Tensor, ...]:
    """The taps recorded while evaluating ``y`` ``(*E, ...)``; each must be per entry ``(*E, ...)``."""
    if taps is None:
        return ()
    for tap in taps.taps:
        if tap.shape[:entry_dims] != y.shape[:entry_dims]:
            raise NotImplementedError(f"a layer norm inside the map has leading dims {tuple(tap.shape)}, not the "
                                      f"entries {tuple(y.shape[:entry_dims])}: its rounding cannot be attributed")
    return tuple(taps.taps)


def _reverse_jacobian_norm(fn, inputs, entry_dims):
    return torch.linalg.matrix_norm(wide(_reverse_jacobian(fn, inputs, entry_dims)), ord=2)


def propagated_variance(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                        scales: Sequence[Sequence[torch.Tensor]], *, entry_dims: int,
                        width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``||J diag(r)||_F^2`` ``(S, *E)`` for each set ``r`` of ``scales`` and the value ``fn(*inputs)``
    ``(*E, ...)``: ``J`` the Jacobian of ``fn`` at ``inputs`` (each ``(*E, n_j)``), each set one tensor
    per input (same shapes), the map's taps (:class:`~.taps.MapTaps`) added; ``width`` the output's
    size per entry if known. Exact up to :data:`EXACT_WIDTH`, else :data:`PROBES` Rademacher probes
    (docs/error-model.md, "Propagation"); the value comes from the probe's forward pass."""
    inputs = tuple(x.detach() for x in inputs)
    if width is None or width <= EXACT_WIDTH:
        with torch.no_grad():
            value = fn(*inputs)
        width = value.flatten(entry_dims).shape[-1]
    taps = MapTaps(inputs[0].shape[:entry_dims], inputs[0].dtype)
    if width > EXACT_WIDTH:
        out, value = _probed_variance(fn, inputs, scales, entry_dims, PROBES, taps)
    else:
        jac = wide(_reverse_jacobian(fn, inputs, entry_dims, taps)).square()
        out = torch.stack([
            (jac * wide(torch.cat([sc.flatten(entry_dims) for sc in (*set_, *taps.scales)], dim=-1)).square()[..., None, :]
             ).sum((-2, -1)) for set_ in scales])
    if not torch.isfinite(out).all():
        raise NonFiniteError("the Jacobian of the block's map is not finite here (a value overflowed "
                             f"in {inputs[0].dtype}): the error model cannot bound the rounding")
    return out, value


def _probed_variance(fn, inputs, scales, entry_dims, probes, taps):
    """The probes' estimates ``(S, *E)`` and ``fn``'s value. The cotangents are signs (exact in
    every dtype); the scales multiply the gradients ``J^T eta`` in float32 at least, where a scale
    of a few roundings of a bfloat16/float16 value neither underflows nor loses relative precision."""
    gen = torch.Generator(device=inputs[0].device).manual_seed(PROBE_SEED)
    xs = tuple(x.detach().requires_grad_(True) for x in inputs)  # no copy: a new leaf on the same storage
    with torch.enable_grad(), taps:
        y = fn(*xs)
    xs = xs + _entry_taps(taps, y, entry_dims)
    total = torch.zeros((len(scales),) + y.shape[:entry_dims], dtype=torch.promote_types(y.dtype, torch.float32),
                        device=y.device)
    for i in range(probes):
        eta = torch.randint(0, 2, y.shape[entry_dims:], generator=gen, device=y.device).to(y.dtype) * 2 - 1
        grads = torch.autograd.grad(y, xs, eta.expand_as(y), retain_graph=i < probes - 1, allow_unused=True)
        grads = [None if g is None else wide(g) for g in grads]
        for k, set_ in enumerate(scales):
            for g, sc in zip(grads, (*set_, *taps.scales)):
                if g is not None:
                    total[k] += torch.linalg.vector_norm((g * wide(sc)).flatten(entry_dims), dim=-1).square()
    return total / probes, y.detach()

