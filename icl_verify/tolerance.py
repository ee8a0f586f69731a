"""The error model: how far apart the two sides of each identity may be in floating point.

Notation: ``u`` is the unit roundoff of the dtype (``finfo.eps / 2``), ``gamma(n) = n u / (1 - n u)``
(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), ``|A|`` the elementwise
absolute value, ``d`` the width of ``z``, ``m`` the widest first matrix.

**Pre-activations.** The target side computes ``h_t = fl(W z_t + b)``. The updated side
computes ``dz = fl(z_t - z_r)``, ``left = fl(W dz)``, ``right = fl(z_r / fl(||z_r||^2))``,
then either ``fl((W + left right^T) z_r + b)`` (dense) or ``fl(W z_r + b) + left fl(right . z_r)``
(factored). In exact arithmetic both equal ``W z_t + b``. Bounding each rounding to first order
(inner products of length ``d`` cost ``gamma(d)``, ``right . z_r = 1 + theta(d+1)``, and
``|W + dW| |z_r| <= |W| |z_r| + |left|`` because ``|right| . |z_r| = 1``) gives, componentwise,

    |h_t - h_u| <= gamma(d + 3) (|W||z_t| + 2|W||z_r| + |W||z_t - z_r| + 2|b| + 3|left|)  =: tau_h

for both evaluation orders. The bypass ``s_r + fl(s_t - s_r)`` is within
``tau_s = gamma(2) (|s_t| + |s_t - s_r|)`` of ``s_t``.

**Outputs.** Both sides then pass through the same map ``y = output(hs, s)`` (the rest of the
network, the bypass addition, a post-norm). To first order, with ``J_h`` and ``J_s`` the
Jacobians of that map with respect to the pre-activations and to the bypass at the updated
side's point, and ``sigma_h``, ``sigma_s`` their largest singular values (exact from the Jacobian
for narrow outputs, else power iteration on autograd's jvp/vjp),

    ||y_t - y_u|| <= sigma_h (||tau_h|| + 2 gamma(m + 2) ||h_u||)
                   + sigma_s (||tau_s|| + 2 gamma(m + 2) ||s_u||) + 2 gamma(m + 2) ||y_u||

where the ``gamma(m + 2)`` terms are the rounding of evaluating the map itself on each side,
modelled as a relative perturbation of its inputs and of its output (backward stability of
matrix products, norms and pointwise functions). Bounding ``J_h`` and ``J_s`` apart matters for
real models, whose residual stream ``s`` is often far larger than ``h`` (SmolLM2: ``||s||`` up to
2e4 against ``||h|| < 400``) while ``J_s`` is the identity or a norm's Jacobian.

**Stacks.** Block ``l`` adds its own error ``tol_l`` (above, at its with-context input) and
amplifies what arrives by ``sigma_l``, the norm of the Jacobian of the updated block's map from
the query representation to its output: ``E_l = sigma_l E_{l-1} + tol_l``, ``E_0 = 0``.

**Matrices.** For increments ``W'_{i+1} - W'_i`` against ``(W dz_i) right^T``, telescoping sums
and SGD steps, the elementwise bounds are given in the functions below; their Frobenius norm is
compared with the Frobenius norm of the difference.

The same derivation serves float32 and float64: only ``u`` changes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import NonFiniteError


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2`` of a floating dtype."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """``gamma(n) = n u / (1 - n u)``: the relative error bound of an ``n``-term sum."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma({n}) is undefined in {dtype}: n u >= 1")
    return nu / (1 - nu)


def abs_matvec(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``|W| |z|``: ``w`` ``(m, d)``, ``z`` ``(..., d)`` -> ``(..., m)``."""
    return z.abs() @ w.abs().T


def pre_activation_bound(w: torch.Tensor, b: torch.Tensor | None, z_t: torch.Tensor,
                         z_r: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """``tau_h`` of the module docstring, componentwise: ``(..., m)``."""
    g = gamma(w.shape[1] + 3, w.dtype)
    acc = abs_matvec(w, z_t) + 2 * abs_matvec(w, z_r) + abs_matvec(w, z_t - z_r) + 3 * left.abs()
    if b is not None:
        acc = acc + 2 * b.abs()
    return g * acc


def bypass_bound(s_t: torch.Tensor, s_r: torch.Tensor) -> torch.Tensor:
    """``tau_s = gamma(2) (|s_t| + |s_t - s_r|)``: ``(..., d_out)``."""
    return gamma(2, s_t.dtype) * (s_t.abs() + (s_t - s_r).abs())


def spectral_norm(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], *,
                  entry_dims: int, iterations: int = 20) -> torch.Tensor:
    """Largest singular value of the Jacobian of ``fn`` at ``inputs``, per entry: ``(*E,)``.

    ``fn`` maps tensors ``(*E, n_j)`` to ``(*E, p)`` and treats each of the ``entry_dims`` leading
    dims ``E`` independently (one Jacobian per entry). Power iteration on ``J^T J`` with
    autograd's jvp and vjp from a deterministic start (all ones), when the output is wider than
    ``2 * iterations``; otherwise (and where an operation has no forward-mode derivative, such
    as torch's fused LSTM) the Jacobian is built row by row in reverse mode, which is cheaper
    for narrow outputs, and its norm taken exactly.
    """
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
    sigma = torch.zeros(inputs[0].shape[:entry_dims], dtype=inputs[0].dtype)
    tiny = torch.finfo(inputs[0].dtype).tiny
    for _ in range(iterations):
        nv = _entry_sq(v, entry_dims).sqrt().clamp_min(tiny)
        v = tuple(x / nv.reshape(nv.shape + (1,) * (x.ndim - entry_dims)) for x in v)
        jv = torch.func.jvp(fn, inputs, v)[1]
        sigma = jv.flatten(entry_dims).norm(dim=-1)
        v = vjp_fn(jv)
    return sigma


def _reverse_jacobian_norm(fn, inputs, entry_dims):
    xs = tuple(x.clone().requires_grad_(True) for x in inputs)
    with torch.enable_grad():
        y = fn(*xs)
        flat = y.flatten(entry_dims)
        rows = []
        for j in range(flat.shape[-1]):
            grads = torch.autograd.grad(flat[..., j].sum(), xs, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(x) if g is None else g).flatten(entry_dims)
                                   for g, x in zip(grads, xs)], dim=-1))
    jac = torch.stack(rows, dim=-2)  # (*E, p, n)
    return torch.linalg.matrix_norm(jac, ord=2)



def entry_norm(*tensors: torch.Tensor | None, entry_dims: int) -> torch.Tensor:
    """Euclidean norm over everything but the ``entry_dims`` leading dims, jointly over tensors,
    scaled by the largest magnitude so that squares of large entries do not overflow."""
    flat = [t.flatten(entry_dims) for t in tensors if t is not None]
    m = torch.stack([t.abs().amax(-1) for t in flat]).amax(0)
    m = torch.where(m > 0, m, torch.ones_like(m))
    return m * sum(((t / m[..., None]) ** 2).sum(-1) for t in flat).sqrt()
