"""The error model: how far apart the two sides of each identity may be in floating point.

Notation: ``u`` is the unit roundoff of the dtype (``finfo.eps / 2``), ``u_acc`` the one in which
PyTorch accumulates its products and reductions (float32 for bfloat16 and float16), ``|A|`` the
elementwise absolute value, ``d`` the width of ``z``, ``m`` the widest first matrix, ``d_out``
the width of the block's output. Two rounding constants:

- ``gamma(n) = n u / (1 - n u)``, the worst-case relative error of an ``n``-term inner product
  (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), kept by the matrix claims;
- ``rho(n) = sqrt(n) u_acc``, a bound on its *standard deviation* relative to the scale of its
  partial sums ``q(W, z) = sqrt((W∘W)(z∘z) + (W z)^2)``, when the roundings are independent and
  mean zero (Higham & Mary, SIAM J. Sci. Comput. 2019) and the partial sums stay within a random
  walk of the terms around the line to the value; the result's rounding to the dtype adds ``u``.

**Identity (every claim on a block's output).** The target side computes ``h_t = fl(W z_t + b)``
and ``y_t = fl(output(h_t, s_t))``; the updated side ``left = fl(W (z_t - z_r))``,
``right = fl(z_r / ||z_r||^2)``, ``h_u`` (dense or factored), ``s_u = s_r + fl(s_t - s_r)`` and
``y_u = fl(output(h_u, s_u))``. In exact arithmetic ``y_t = y_u``. Every rounding of a side is a
perturbation of one input of the map ``(hs, s) -> output(hs, s)`` (or of its output), with a
standard deviation bounded componentwise, per side (:func:`identity_bound` lists the terms:
pre-activations ``rho(d + 3) q + u |h|``, the network's own rounding as a backward perturbation
``(rho(m + 2) + 2u) |h|``, the bypass ``u |s|`` terms, the output ``u ||y|| + rho(d_out + 2) ||y - s||``).
With ``J`` the map's Jacobian at the updated side's point, to first order

    E ||y_t - y_u||^2 <= ||J diag(r_t)||_F^2 + ||J diag(r_u)||_F^2 + 2 ||r_out||^2 =: V,

and the tolerance is ``TAIL sqrt(V)``, ``TAIL = 5`` (exceeded with probability <= 1/25 by Markov's
inequality, about ``exp(-(TAIL - 1)^2 / 2)`` when the sum concentrates). ``||J diag(r)||_F`` is
exact (reverse mode) for outputs up to ``EXACT_WIDTH`` wide, else estimated with one Rademacher
probe of the output space (one reverse pass, whose forward pass is the updated side's output),
which both sides' scales share. No power iteration; no ``sqrt(n)`` or alignment slack, which made
the old worst-case tolerance 4e4 times the error on a 576-wide model.

**Shared roundings.** Where both sides compute the same values (checked bitwise per entry, not
assumed) their rounding is common and cancels in ``y_t - y_u``: entries whose pre-activations are
equal (parallel blocks, the first position) drop the pre-activation and network terms; entries
where both outputs are, bitwise, their bypass plus one network value ``g = output(h_u, 0)``
(:func:`additive_entries`) differ by ``fl(s_t + g) - fl(s_u + g)`` exactly, so only the shift's
rounding and each side's last addition remain: tolerance ``TAIL`` times the root sum of squares
of ``u ||y_t||`` and ``u || |s_t - s_r| + |s_u| + |y_u| ||``.

**Stacks.** Block ``l`` adds its own tolerance ``tol_l`` and amplifies what arrives by
``sigma_l``, the norm of the Jacobian of the updated block's map from the query representation
to its output: ``E_l = sigma_l E_{l-1} + tol_l``, ``E_0 = 0`` (worst-case in the propagation);
``tol_l`` also carries the fresh rounding of the lone token's decomposition at the propagated
point (Monte Carlo arithmetic, :func:`icl_verify.claims.stack`).

**Matrices.** For increments ``W'_{i+1} - W'_i`` against ``(W dz_i) right^T``, telescoping sums
and SGD steps, the elementwise worst-case bounds are given in :mod:`icl_verify.claims`; their
Frobenius norm is compared with the Frobenius norm of the difference.

The same derivation serves float64, float32, bfloat16 and float16: only ``u`` and ``u_acc``
change. Where ``TAIL`` roundings of a pre-activation reach its size (catastrophic cancellation)
or its distance to another kink of the map (a top-k routing tie: ``ContextualBlock.kinks``),
each side's term is raised to the map's largest measured change over the corners of that reach,
and to the sum of its changes with each reaching input moved alone (:func:`_secant`); the
rounding of a layer norm's mean inside the map, and in float16 gradual underflow (``eta``,
:func:`underflow`, per rounded value), enter through taps (:mod:`icl_verify.rounding_taps`) and
the pre-activations' scales. Not covered otherwise: second-order terms, rounding correlated
across components (one rounded norm statistic scaling a whole output), and overflow (it raises
:class:`~icl_verify.errors.NonFiniteError`). docs/error-model.md has the derivation, the choices
weighed and the measured error/tolerance ratios.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import torch

from .errors import NonFiniteError

if TYPE_CHECKING:
    from .blocks import ContextualBlock
    from .updates import ImplicitUpdate


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2`` of a floating dtype."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """``gamma(n) = n u / (1 - n u)``: the relative error bound of an ``n``-term sum."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma({n}) is undefined in {dtype}: n u >= 1")
    return nu / (1 - nu)


def rounding(stored: int, summed: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``c(k, n) = (1 + u)^k (1 + gamma_acc(n)) - 1``: the worst-case relative error of a chain of
    ``k = stored`` roundings to ``dtype`` (unit roundoff ``u``) and one ``n = summed``-term
    accumulation in PyTorch's accumulation precision, ``gamma_acc(n) = n u_acc / (1 - n u_acc)``
    (:func:`accumulation_roundoff`; Higham, *Accuracy and Stability*, Lemma 3.3). In float32 and
    float64 ``c(k, n) <= gamma(k + n)``; in bfloat16/float16 ``n`` only meets ``u_acc`` (float32),
    so it stays defined up to ``n ~ 1.7e7`` terms where ``gamma(n)`` fails from ``n = 256``."""
    n_u = summed * accumulation_roundoff(dtype, device)
    if n_u >= 1:
        raise ValueError(f"the rounding bound of a {summed}-term sum is undefined in {dtype}: n u_acc >= 1")
    return (1 + unit_roundoff(dtype)) ** stored * (1 + n_u / (1 - n_u)) - 1


TAIL = 5.0
"""``lambda``: the tolerance is ``TAIL`` standard deviations of the modelled rounding."""

EXACT_WIDTH = 64
"""Outputs up to this width get the exact Jacobian (reverse mode); wider ones random probes."""

RATIO_TERMS = frozenset({"gain", "secant"})
"""Terms of :func:`identity_bound` that are ratios or flags, not lengths: reports never divide them by
an output's norm."""

VERTEX_BITS = 4
"""The secant rule (:func:`_secant`) visits every sign combination of up to this many reaching
components of an entry: at most ``2^4 = 16`` evaluations of the map per flagged entry and side."""

PROBES = 1
"""Rademacher probes (reverse passes) of ``||J diag(r)||_F^2`` for outputs wider than :data:`EXACT_WIDTH`:
one for both sides of an identity (docs/error-model.md, "Cost", measures its spread)."""


def accumulation_roundoff(dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``u_acc``: the unit roundoff in which PyTorch accumulates matrix products and reductions of
    ``dtype`` on ``device``. bfloat16 and float16 accumulate in float32 (CPU kernels always; CUDA
    unless ``torch.backends.cuda.matmul.allow_{bf16,fp16}_reduced_precision_reduction`` is set,
    which PyTorch documents as allowing reduced-precision accumulation); others in themselves."""
    flag = {torch.bfloat16: "allow_bf16_reduced_precision_reduction",
            torch.float16: "allow_fp16_reduced_precision_reduction"}.get(dtype)
    if flag is None or (torch.device(device).type == "cuda"
                        and getattr(torch.backends.cuda.matmul, flag, False)):
        return unit_roundoff(dtype)
    return unit_roundoff(torch.float32)


def half_subnormal_spacing(dtype: torch.dtype) -> float:
    """Half the spacing of ``dtype``'s subnormal numbers: ``smallest_normal * eps / 2``."""
    fi = torch.finfo(dtype)
    return fi.smallest_normal * fi.eps / 2


def underflow(dtype: torch.dtype) -> float:
    """``eta``: half the spacing of ``dtype``'s subnormal numbers, the absolute error a product,
    quotient or stored accumulation may add on top of its relative rounding where its result
    lands among them (Higham, *Accuracy and Stability*, §2.1); sums and differences that land
    there are exact. 0 where ``eta^2`` vanishes in the error model's own arithmetic (float32 for
    bfloat16, float32 and float64 themselves): every dtype but float16."""
    eta = half_subnormal_spacing(dtype)
    # eta^2 rounds to 0 in that arithmetic when it is at most half its smallest subnormal
    return eta if eta * eta > half_subnormal_spacing(torch.promote_types(dtype, torch.float32)) else 0.0


def rho(n: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``rho(n) = sqrt(n) u_acc``: the standard deviation of an ``n``-term inner product's
    accumulated rounding, relative to the scale of its partial sums (:func:`sum_scale`), under
    independent mean-zero roundings; the result's rounding to ``dtype`` (``u``) comes on top."""
    return n ** 0.5 * accumulation_roundoff(dtype, device)


def sum_scale(w: torch.Tensor, zs: Sequence[torch.Tensor], wzs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum_i q(W, z_i)^2)`` with ``q(W, z) = sqrt((W∘W)(z∘z) + (W z)^2)``, from ``W`` ``(m, d)``,
    vectors ``zs[i]`` ``(..., d)`` and their products ``wzs[i] = W z_i`` ``(..., m)`` (at hand in
    every claim): ``(..., m)``, one matrix product whatever the number of vectors.

    The scale of the partial sums of each inner product ``w_i . z`` when they follow the straight
    line to their value plus a random walk of the terms (mean-square ``<= ||w_i∘z||^2 + (w_i.z)^2``);
    ``q <= sqrt(2) |W||z|``, and ``q`` is ``sqrt(d)`` times smaller than ``|W||z|`` for terms of
    random sign. For float64 values the product ``(W∘W)(sum_i z_i∘z_i)`` runs in float32 (half the
    time of a float64 one) on operands divided by their largest entry: a sum of non-negative terms, so its relative
    error is below ``d u_32`` (3e-5 for ``d = 576``), immaterial for a scale; terms more than 1e38
    times smaller than the largest ``W_ij^2`` times the largest ``z_j^2`` of their entry are dropped."""
    sq = sum(wide(z).square() for z in zs)
    wz2 = wide(wzs[0]).square()
    for wz in wzs[1:]:
        wz2.addcmul_(wz, wz)
    lead, sq = sq.shape[:-1], sq.flatten(0, -2)
    if w.dtype != torch.float64:
        w2 = wide(w.detach()).square()
        return torch.addmm(wz2.flatten(0, -2), sq, w2.T).reshape(*lead, w.shape[0]).sqrt_()
    m_w = torch.linalg.vector_norm(w.detach(), ord=float("inf")).clamp_min(torch.finfo(w.dtype).tiny)
    m_z = sq.amax(-1, keepdim=True)
    m_z = torch.where(m_z > 0, m_z, torch.ones_like(m_z))
    prod = (sq / m_z).float() @ (w.detach() / m_w).float().square_().T
    return wz2.addcmul_(prod.to(wz2.dtype).reshape(*lead, w.shape[0]), (m_z * m_w ** 2).reshape(*lead, 1)).sqrt_()


def wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 at least: the error model's own arithmetic on bfloat16/float16 values
    (whose squares overflow float16) runs in float32."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def abs_matvec(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``|W| |z|``: ``w`` ``(m, d)``, ``z`` ``(..., d)`` -> ``(..., m)``."""
    return z.abs() @ w.abs().T


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
    operation has no batching rule. ``taps``: a :class:`~icl_verify.rounding_taps.rounding_taps` to
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
    """``||J diag(r)||_F^2`` for each set ``r`` of ``scales``, ``(S, *E)``, and the value
    ``fn(*inputs)`` ``(*E, ...)``: ``J`` the Jacobian of ``fn`` at ``inputs`` (each ``(*E, n_j)``),
    each set one tensor per input (same shapes), ``r`` their concatenation; ``width`` the size of
    ``fn``'s output per entry (found by evaluating ``fn`` when not given).

    Exact from the reverse-mode Jacobian when the output is at most :data:`EXACT_WIDTH` wide;
    else ``||diag(r) J^T eta||^2`` averaged over :data:`PROBES` Rademacher vectors ``eta`` of the
    output space (unbiased: ``E[eta^T J diag(r)^2 J^T eta] = tr(J diag(r)^2 J^T)``), fixed seed,
    one sign per output component shared by every entry (each entry's estimate is unbiased on
    its own), one reverse pass per probe for every set, after one forward pass that gives the
    value (the same kernels as a plain evaluation; tests/test_check_cost.py checks it bitwise on
    every tiny real architecture)."""
    from .rounding_taps import rounding_taps

    inputs = tuple(x.detach() for x in inputs)
    if width is None or width <= EXACT_WIDTH:
        with torch.no_grad():
            value = fn(*inputs)
        width = value.flatten(entry_dims).shape[-1]
    taps = rounding_taps(inputs[0].shape[:entry_dims], inputs[0].dtype)
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
    gen = torch.Generator(device=inputs[0].device).manual_seed(0)
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


def _entry_max(ts: Sequence[torch.Tensor], entry_dims: int) -> torch.Tensor:
    """Largest magnitude per entry over the tensors ``(*E, ...)``: ``(*E,)``, 1 where all are 0."""
    m = torch.stack([t.flatten(entry_dims).abs().amax(-1) for t in ts]).amax(0)
    return torch.where(m > 0, m, torch.ones_like(m))


def left_rounding(right: torch.Tensor, z_r: torch.Tensor, dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """``c_left`` ``(*E, 1)``: the standard deviation of the rounding that the updated side adds to
    a pre-activation through its left factor, relative to ``|left|``; ``right``, ``z_r`` ``(*E, d)``.

    The factored side forms ``h_r + left c`` with ``c = right . z_r`` (1 in exact arithmetic),
    the dense side ``(W + left right^T) z_r``. With ``K = ||right∘z_r||`` (the size of the terms
    of ``c``) and ``zeta^2 = 1 + ||z_r∘z_r||^2 / ||z_r||^4`` (the partial-sum scale of
    ``||z_r||^2``, relative to it), the roundings, independent and mean zero as in :func:`rho`,
    relative to ``|left|``:

    - the sum ``c`` (``rho(d) sqrt(K^2 + 1)``; the dense product's partial sums instead, the same
      size) and its storage (``u``);
    - per term of ``c``, the two quotients of ``right = z_r / n / n`` and the product (``u K``
      each); in the dense path the quotients, the product ``left_i right_j``, the storage of
      ``W + dW`` and the product by ``z_r,j`` (five);
    - ``1 / n^2``, common to every term, ``n = m ||z_r / m||`` (``m = max |z_r|``): twice the
      rounding of ``n``, i.e. that of the sum of squares (``rho(d) zeta``, its storage ``u``, and
      ``sqrt(5) u sqrt(zeta^2 - 1)`` from the quotients ``z_r / m`` and the squares) and twice the
      square root's and the product by ``m``'s (``2u`` each);
    - the storage of ``left`` and, factored, its product by ``c`` (``u`` each).

    In quadrature, one bound for both paths::

        c_left^2 = rho(d)^2 (K^2 + 1 + zeta^2) + u^2 (5 K^2 + 5 zeta^2 + 7)

    For ``right = z_r / ||z_r||^2``, ``K^2 = zeta^2 - 1 <= 1``; the other right factors with
    ``right . z_r = 1`` that the non-uniqueness property draws have terms as large as ``t``."""
    zr, rt = wide(z_r), wide(right)
    x2 = (zr / zr.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(zr.dtype).tiny)).square()
    zeta2 = 1 + x2.square().sum(-1, keepdim=True) / x2.sum(-1, keepdim=True).square().clamp_min(1)
    k2 = (rt * zr).square().sum(-1, keepdim=True)
    r, u = rho(z_r.shape[-1], dtype, device), unit_roundoff(dtype)
    return (r * r * (k2 + 1 + zeta2) + u * u * (5 * k2 + 5 * zeta2 + 7)).sqrt()


def identity_bound(block: ContextualBlock, update: ImplicitUpdate, hs: Sequence[torch.Tensor],
                   s: torch.Tensor | None, *, entry_dims: int,
                   target_side: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None):
    """The identity's tolerance ``TAIL sqrt(V)`` of the module docstring, and its terms.

    Args:
        block: its ``first_layers`` ``W_k`` ``(m_k, d)``, and its map ``output(hs, s)``.
        update: target and reference ``z`` ``(*E, d)`` and ``s`` ``(*E, d_out)``, left factors
            ``(*E, m_k)``.
        hs: the updated side's pre-activations (the map's inputs), ``(*E, m_k)`` each.
        s: the updated side's bypass (the map's last input), ``(*E, d_out)``, or None.
        target_side: the target side's pre-activations and output ``(hs_t, y_t)`` as computed, if at
            hand: entries whose pre-activations are bitwise those of the updated side share the
            network's rounding, which then cancels (:func:`shared_entries`); None charges both
            sides independently everywhere.

    Returns ``(tolerance, terms, y)``: ``(*E,)``, a dict of ``(*E,)`` tensors: ``rounding_target``
    and ``rounding_updated`` (``TAIL`` standard deviations of each side's rounding, propagated; the
    tolerance is their root sum of squares) and ``gain`` (``sqrt(V_t + V_u) / ||(r_t, r_u)||``: how
    much the map amplifies the rounding of its inputs), and the updated side's output ``y = output(hs, s)``
    ``(*E, d_out)`` (the propagation evaluates the map anyway: no second evaluation).
    """
    first_layers, target, reference, left = block.first_layers(), update.target, update.reference, update.left
    dt, dev = hs[0].dtype, hs[0].device
    u = unit_roundoff(dt)
    r_in = rho(target.z.shape[-1] + 3, dt, dev)
    r_map = rho(max(w.shape[0] for w, _ in first_layers) + 2, dt, dev) + 2 * u
    lf_coef = left_rounding(update.right, reference.z, dt, dev)
    eta = underflow(dt)
    z_r_l1 = eta * torch.linalg.vector_norm(wide(reference.z), ord=1, dim=-1, keepdim=True) if eta else None
    same = shared_entries(hs, target_side, entry_dims)
    shared = same.nonzero(as_tuple=True) if same is not None and same.any() else None
    far_u = block.kinks(hs)  # distances to the map's kinks where they are not at 0
    far_t = {} if target_side is None else block.kinks(target_side[0])
    side_t, side_u, reach_t, reach_u, dist_t, dist_u = [], [], [], [], [], []
    for i, ((w, b), lf, h) in enumerate(zip(first_layers, left, hs)):
        # W z_t = W z_r + left = h - b in exact arithmetic: first-order scales need no new product;
        # q(W, z_t) <= q(W, z_r) + q(W, z_t - z_r) (triangle inequality on the random-walk part);
        # one product gives q = sqrt(q_r^2 + q_d^2), and (Cauchy-Schwarz) q_r + q_d <= sqrt(2) q
        wz_r = h - lf if b is None else h - b - lf
        q = sum_scale(w, (reference.z, target.z - reference.z), (wz_r, lf))
        h_abs, lf_abs = wide(h).abs(), wide(lf).abs().mul_(lf_coef)
        # target: r_in q_t + u |h| (the stored pre-activation) + r_map |h| (the network);
        # updated: W z_r and W (z_t - z_r), two products whose roundings are independent
        # (r_in q_r and r_in q_d: together r_in q in standard deviation, not r_in (q_r + q_d)),
        # plus one rounding u per operand entry (of z_t - z_r: u q_d; of W + dW when dense: u q_r
        # beside the left factor's own r_in q_d, the dense product's left part being in the |left|
        # terms): (r_in + u) q in all; then c_left |left| (:func:`left_rounding`) + 2 u |h| + r_map |h|.
        # In place, a few passes over (*E, m).
        acc_t = torch.add(q * (r_in * 2 ** 0.5), h_abs, alpha=u + r_map)
        acc_u = torch.add(q.mul_(r_in + u), lf_abs).add_(h_abs, alpha=2 * u + r_map)
        if b is not None:
            ub = u * wide(b).abs()
            acc_t.add_(ub)
            acc_u.add_(ub)
        if eta:  # gradual underflow: the stored W z_t; W z_r, left and left (right . z_r) (or the
            # products left_i right_j of W + dW, eta ||z_r||_1, and the stored (W + dW) z_r)
            acc_t.add_(eta)
            acc_u.add_(z_r_l1 + 3 * eta)
        if shared is not None:  # bitwise the same pre-activations: the same rounding on both sides
            acc_t[shared] = 0
            acc_u[shared] = 0
        side_t.append(acc_t)
        side_u.append(acc_u)
        dist_u.append(far_u.get(i, h_abs))
        reach_u.append(_reaches(acc_u, dist_u[-1], entry_dims))
        if target_side is not None:
            dist_t.append(far_t.get(i, wide(target_side[0][i]).abs()))
            reach_t.append(_reaches(acc_t, dist_t[-1], entry_dims))
    inputs = list(hs)
    if s is not None:
        side_t.append(u * target.s.abs() + u * s.abs())
        side_u.append(2 * u * (target.s.abs() + (target.s - reference.s).abs()) + u * s.abs())
        inputs.append(s)
    k = len(hs)
    fn = (lambda *a: block.output(list(a[:k]), a[k])) if s is not None else \
        (lambda *a: block.output(list(a), None))
    # the two sides round independently: one propagation (one probe) serves both sets of scales
    (var_t, var_u), y_u = propagated_variance(
        fn, inputs, [side_t, side_u], entry_dims=entry_dims,
        width=None if target_side is None else target_side[1].flatten(entry_dims).shape[-1])
    y = wide(y_u)
    n_t, n_u = entry_norm(*side_t, entry_dims=entry_dims), entry_norm(*side_u, entry_dims=entry_dims)
    share = (var_t + var_u) / torch.hypot(n_t, n_u).square().clamp_min(torch.finfo(var_t.dtype).tiny)
    out = u * entry_norm(y, entry_dims=entry_dims)
    out = out + (rho(y.shape[-1] + 2, dt, dev) + 2 * u) * entry_norm(y if s is None else y - wide(s),
                                                                      entry_dims=entry_dims)
    out_sq = out.square()
    rounding_t = TAIL * (var_t + out_sq).sqrt()
    rounding_u = TAIL * (var_u + out_sq).sqrt()
    if same is not None and s is not None:
        additive = additive_entries(block, hs, s, y, target_side[1], target.s, same)
        # y_t = fl(s_t + g), y_u = fl(s_u + g) with the same g: only the shift's rounding
        # (u |s_t - s_r| + u |s_u|) and the last addition of each side (u |y|) remain
        sh = wide(target.s - reference.s).abs()
        add_t = TAIL * u * entry_norm(wide(target_side[1]), entry_dims=entry_dims)
        add_u = TAIL * u * entry_norm(sh + wide(s).abs() + y.abs(), entry_dims=entry_dims)
        rounding_t = torch.where(additive, add_t, rounding_t)
        rounding_u = torch.where(additive, add_u, rounding_u)
    sides = [_Side(hs, s, y_u, side_u[:k], rounding_u, torch.stack(reach_u).any(0), left, dist_u)]
    if target_side is not None:
        sides.append(_Side(target_side[0], target.s, target_side[1], side_t[:k], rounding_t,
                           torch.stack(reach_t).any(0), None, dist_t))
    rounding_u, *rest = _secant(fn, sides, entry_dims, TAIL * out)
    rounding_t = rest[0] if rest else rounding_t
    secant = torch.stack([side.flag for side in sides]).any(0)
    gain = share.sqrt()
    return torch.hypot(rounding_t, rounding_u), {
        "rounding_target": rounding_t, "rounding_updated": rounding_u, "gain": gain,
        "secant": secant.to(gain.dtype)}, y_u


def _reaches(scale: torch.Tensor, distance: torch.Tensor, entry_dims: int) -> torch.Tensor:
    """``(*E,)``: the entries where ``TAIL`` times the modelled rounding ``scale`` of some
    pre-activation reaches its ``distance`` to the map's nearest kink (``|h|`` for an activation's
    kink at 0; :meth:`~icl_verify.blocks.ContextualBlock.kinks`), both ``(*E, m)``, in two passes."""
    return torch.sub(distance, scale, alpha=TAIL).flatten(entry_dims).amin(-1) < 0


class _Side(NamedTuple):
    """One side of an identity, as :func:`_secant` reads it: the map's inputs ``hs`` (each
    ``(*E, m_k)``) and ``s`` (or None), its output ``y``, the modelled rounding ``scales`` of ``hs``
    (same shapes), the side's propagated ``rounding`` ``(*E,)``, ``flag`` ``(*E,)`` the entries
    where ``TAIL`` times a scale reaches its pre-activation's distance to the map's nearest kink
    (:func:`_reaches`: catastrophic cancellation, a sign or a kink may be crossed, or a top-k
    routing tie), the ``direction`` of the side's common rounding (tensors shaped like ``hs``) or
    None, and the ``distance`` of each component of ``hs`` to its nearest kink (same shapes)."""
    hs: Sequence[torch.Tensor]
    s: torch.Tensor | None
    y: torch.Tensor
    scales: Sequence[torch.Tensor]
    rounding: torch.Tensor
    flag: torch.Tensor
    direction: Sequence[torch.Tensor] | None
    distance: Sequence[torch.Tensor]


def _secant(fn, sides: Sequence[_Side], entry_dims: int, out_rounding: torch.Tensor) -> list[torch.Tensor]:
    """Each side's rounding ``(*E,)``, raised to the measured change of the map where its tangent
    may not describe it, at the entries it flags (:class:`_Side`).
    There the rounding becomes at least ``c + out_rounding`` (triangle inequality): ``c`` the largest
    ``||output(hs + TAIL r sigma, s) - y||`` over sign vectors ``sigma``, how far the map moves within
    the reach, and ``out_rounding`` ``(*E,)`` the output's own rounding (``TAIL`` standard
    deviations), how far a computed output is from the map's value. The sign vectors: every
    sign combination of the entry's reaching components (those whose ``TAIL r`` exceeds their
    ``distance`` to a kink, ``|h|`` unless the block says otherwise; of the first
    :data:`VERTEX_BITS` of them, the rest cycling through the same bits), with the other
    components along ``+-xi``: the signs of ``direction`` (the updated side's left factors: the
    rounding of ``right . z_r`` moves every pre-activation along ``left`` at once, so its corners
    ``+-r sign(left)`` are visited), else one fixed Rademacher vector: a secant over the
    rounding's reach instead of the tangent at its centre, at the corners of the reach where it
    matters (docs/error-model.md, "First order and cancellation"). And at least ``a + rounding``,
    ``a`` the sum over the reaching components of the larger change when that component alone
    moves to either end of its reach: a bound on the change over the whole reach for a map that
    acts on each input separately and then linearly (triangle inequality; a monotone activation
    changes most at an end). Other entries unchanged. One evaluation of the map for every flagged
    entry, side and move (``2^min(k, VERTEX_BITS)`` corners and ``2k`` single moves for ``k``
    reaching components)."""
    moved, owners = [], []
    for hs, s, y, scales, rounding, flag, direction, distance in sides:
        fl = flag.flatten().nonzero()[:, 0]  # (n,) flagged entries, counted over the flattened E
        if not len(fl):
            owners.append(None)
            continue
        h_sel = [_rows(h, fl, flag.numel()) for h in hs]
        r = TAIL * torch.cat([_rows(sc, fl, flag.numel()) for sc in scales], -1)  # (n, M)
        if direction is None:
            gen = torch.Generator(device=y.device).manual_seed(1)
            xi = (torch.randint(0, 2, (r.shape[-1],), generator=gen, device=r.device) * 2 - 1).to(r.dtype)
            xi = xi.expand_as(r)
        else:
            xi = torch.cat([_rows(t, fl, flag.numel()) for t in direction], -1)
            xi = torch.where(xi < 0, -1.0, 1.0).to(r.dtype)
        step = r * xi
        steps, owner = [step, -step], [torch.arange(len(fl), device=r.device)] * 2  # corners 0 and 2^bits - 1
        reach = r > torch.cat([_rows(dist, fl, flag.numel()) for dist in distance], -1)
        if bool((reach.sum(-1) > 1).any()):
            more, who = _inner_corners(r, reach, xi)
            steps.append(more)
            owner.append(who)
        corners = sum(len(o) for o in owner)
        ent, comp = reach.nonzero(as_tuple=True)  # each reaching component alone, to either end
        alone = torch.zeros(2, len(ent), r.shape[-1], dtype=r.dtype, device=r.device)
        pair = torch.arange(len(ent), device=r.device)
        alone[0, pair, comp] = r[ent, comp]
        alone[1, pair, comp] = -r[ent, comp]
        steps.append(alone.flatten(0, 1))
        owner += [ent, ent]
        step, owner = torch.cat(steps), torch.cat(owner)
        moved.append([(h.index_select(0, owner) + st.to(h.dtype)).reshape(-1, *h0.shape[entry_dims:])
                      for h, h0, st in zip(h_sel, hs, step.split([h.shape[-1] for h in h_sel], -1))]
                     + ([] if s is None else
                        [_rows(s, fl, flag.numel()).index_select(0, owner).reshape(-1, *s.shape[entry_dims:])]))
        owners.append((fl, owner, corners, len(ent)))
    if not moved:
        return [side.rounding for side in sides]
    with torch.no_grad():
        out = fn(*[torch.cat(parts) for parts in zip(*moved)])  # rows: side by side, corners within each
    if not torch.isfinite(out).all():
        raise NonFiniteError("the map overflows within the modelled rounding of its inputs: the error "
                             "model cannot bound the rounding")
    roundings, start = [], 0
    for side, own in zip(sides, owners):
        if own is None:
            roundings.append(side.rounding)
            continue
        fl, owner, corners, pairs = own
        y_sel = _rows(side.y, fl, side.flag.numel()).index_select(0, owner)
        change = entry_norm(wide(out[start:start + len(owner)]).reshape(len(owner), -1) - wide(y_sel), entry_dims=1)
        start += len(owner)
        zero = torch.zeros(len(fl), dtype=change.dtype, device=change.device)
        top = zero.scatter_reduce(0, owner[:corners], change[:corners], "amax")
        single = zero.index_add(0, owner[corners:corners + pairs], change[corners:].view(2, pairs).amax(0))
        new = side.rounding.clone().flatten()
        old = new[fl].to(top.dtype)
        new[fl] = torch.maximum(top + out_rounding.flatten()[fl].to(top.dtype), single + old).to(new.dtype)
        roundings.append(new.reshape(side.rounding.shape))
    return roundings


def _rows(t: torch.Tensor, idx: torch.Tensor, entries: int) -> torch.Tensor:
    """Rows ``idx`` of ``t`` ``(*E, ...)`` over its ``entries = prod(E)`` flattened entries: ``(len(idx), width)``."""
    return t.reshape(entries, -1).index_select(0, idx)


def _inner_corners(r: torch.Tensor, reach: torch.Tensor, xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The corners ``1 .. 2^b - 2`` of :func:`_secant` for entries with ``k >= 2`` reaching
    components (``b = min(k, VERTEX_BITS)``), corners ``0`` and ``2^b - 1`` being ``+-r xi``
    (``xi`` ``(n, M)``): the steps ``(N, M)`` and the entry (row of ``r`` ``(n, M)``) of each. Corner ``c`` moves the
    ``j``-th reaching component of its entry by ``r xi (1 - 2 bit_(j mod b)(c))`` and the others by
    ``r xi (1 - 2 bit_0(c))``."""
    ent, comp = reach.nonzero(as_tuple=True)
    k = torch.bincount(ent, minlength=len(r))
    bits = k.clamp(max=VERTEX_BITS)
    inner = torch.where(k > 1, 2 ** bits - 2, 0)
    owner = torch.repeat_interleave(torch.arange(len(r), device=r.device), inner)  # (N,)
    corner = 1 + torch.arange(len(owner), device=r.device) - torch.repeat_interleave(inner.cumsum(0) - inner, inner)
    step = r.index_select(0, owner) * xi.index_select(0, owner) * (1 - 2 * (corner & 1)).to(r.dtype)[:, None]
    keep = k[ent] > 1
    ent, comp = ent[keep], comp[keep]
    pos = torch.arange(len(ent), device=r.device)  # ent is sorted: a component's rank in its entry is
    first = torch.zeros_like(k).scatter_reduce(0, ent, pos, "amin", include_self=False)  # pos - first
    bit = (pos - first[ent]) % bits[ent]
    pair = torch.repeat_interleave(torch.arange(len(ent), device=r.device), inner[ent])
    row = (inner.cumsum(0) - inner)[ent][pair] + torch.arange(len(pair), device=r.device) - \
        torch.repeat_interleave(inner[ent].cumsum(0) - inner[ent], inner[ent])
    sign = (1 - 2 * ((corner[row] >> bit[pair]) & 1)).to(r.dtype)
    step[row, comp[pair]] = r[ent[pair], comp[pair]] * xi[ent[pair], comp[pair]] * sign
    return step, owner


def shared_entries(hs: Sequence[torch.Tensor], target_side: tuple[Sequence[torch.Tensor], torch.Tensor] | None,
                   entry_dims: int) -> torch.Tensor | None:
    """``(*E,)``: the entries at which every pre-activation of the target side (``target_side[0]``) equals
    the updated side's (``hs``) component for component, as computed (not assumed: parallel
    blocks, the first position, a context that changes nothing). There both sides evaluate the
    network on the same values with the same kernel and shapes, so its rounding and the rounding
    of the pre-activations are the same on both sides and cancel in ``y_t - y_u`` (to first order
    through the bypass). None when ``target`` is not given."""
    if target_side is None:
        return None
    pairs = [(a.flatten(entry_dims), b.flatten(entry_dims)) for a, b in zip(target_side[0], hs)]
    # candidates: the entries whose first components agree; the full comparison on those only
    same = torch.stack([(a[..., :8] == b[..., :8]).all(-1) for a, b in pairs]).all(0)
    if same.any():
        idx = same.nonzero(as_tuple=True)
        same[idx] = torch.stack([(a[idx] == b[idx]).all(-1) for a, b in pairs]).all(0)
    return same


def additive_entries(block: ContextualBlock, hs: Sequence[torch.Tensor], s: torch.Tensor, y: torch.Tensor,
                     y_t: torch.Tensor, s_t: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """``(*E,)``: the entries where both sides are, bitwise, their bypass plus one network value
    ``g = output(hs, 0)`` of the updated side: ``y_t == fl(s_t + g)`` and ``y == fl(s + g)``
    component for component. There ``y_t - y_u = fl(s_t + g) - fl(s_u + g)`` exactly, whatever
    the network's rounding was: it is the same value on both sides. This holds where the
    pre-activations are the same (``same``: parallel blocks, the first position) and where the
    network rounds its output so coarsely that both sides land on the same value (transformers'
    RMSNorm computes in float32, so a post-network norm of a float64 model does). A post-norm
    block (``norm(s + f)``) fails the check. ``g`` is evaluated at the ``same`` entries and one
    other; only if that one passes, at the rest too (so a block where it cannot pass costs one
    entry; every entry is still checked on its own)."""
    flat = same.flatten()
    probe = flat.clone()
    rest = (~flat).nonzero()
    if len(rest):
        probe[rest[0]] = True
    ok = _additive(block, hs, s, y, y_t, s_t, probe.reshape(same.shape))
    if len(rest) > 1 and ok.flatten()[rest[0]]:
        ok = ok | _additive(block, hs, s, y, y_t, s_t, ~probe.reshape(same.shape))
    return ok


def _additive(block, hs, s, y, y_t, s_t, mask):
    with torch.no_grad():
        g = block.output([h[mask] for h in hs], torch.zeros_like(s[mask]))
    if g.shape != s[mask].shape:
        return torch.zeros_like(mask)
    ok = ((s_t[mask] + g) == y_t[mask]).all(-1) & ((s[mask] + g) == y[mask]).all(-1)
    return torch.zeros_like(mask).masked_scatter(mask, ok)


def entry_norm(*tensors: torch.Tensor | None, entry_dims: int) -> torch.Tensor:
    """Euclidean norm over everything but the ``entry_dims`` leading dims, jointly over tensors.
    One pass per tensor (``vector_norm``); entries whose sum of squares overflows or underflows
    are recomputed scaled by their largest magnitude."""
    flat = [t.flatten(entry_dims) for t in tensors if t is not None]
    n = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t, dim=-1) for t in flat]), dim=0)
    fi = torch.finfo(n.dtype)
    bad = ~torch.isfinite(n) | (n < fi.tiny ** 0.5 / fi.eps)
    if bad.any():
        n = torch.where(bad, _scaled_norm(flat, entry_dims), n)
    return n


def _scaled_norm(flat: Sequence[torch.Tensor], entry_dims: int) -> torch.Tensor:
    m = _entry_max(flat, entry_dims)
    return m * sum(((t / m[..., None]) ** 2).sum(-1) for t in flat).sqrt()
