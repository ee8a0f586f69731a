"""Each claim of docs/theory.md §2-§4 as a function returning a :class:`Check`: the error between the two
sides per entry (batch element, position, prefix), the tolerance of the error model
(:mod:`icl_verify.tolerance`) and a scale for relative errors. ``icl-verify verify``, the
property suite and the benchmarks all call these, so every claim has one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import dynamics, tolerance as tol
from .blocks import ContextualBlock, Stack
from .errors import InconsistentEvaluationError, NonFiniteError
from .random_rounding import rounding_samples
from .validation import check_finite
from .updates import (
    Decomposition,
    ImplicitUpdate,
    apply_update,
    block_forward,
    context_update,
    position_updates,
    single_token,
    stack_updates,
    subset_update,
    updated_inputs,
)


@dataclass(frozen=True)
class Check:
    """The outcome of one claim over a set of entries.

    Attributes:
        claim: name of the claim.
        error: ``||lhs - rhs||`` per entry, shape ``(...)``.
        tolerance: the error model's bound per entry, same shape.
        scale: the size of the compared quantity per entry (for relative errors).
        terms: what the tolerance is made of, per entry (same shape), by name (see
            :func:`icl_verify.tolerance.identity_bound`); empty where not broken down.
    """

    claim: str
    error: torch.Tensor
    tolerance: torch.Tensor
    scale: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def ratio(self) -> torch.Tensor:
        """``error / tolerance`` per entry (0 where both are 0)."""
        t = self.tolerance.clamp_min(torch.finfo(self.tolerance.dtype).tiny)
        return self.error / t

    @property
    def worst_ratio(self) -> float:
        return float(self.ratio.detach().max()) if self.error.numel() else 0.0

    @property
    def max_error(self) -> float:
        return float(self.error.max()) if self.error.numel() else 0.0

    @property
    def max_relative(self) -> float:
        """Largest ``error / scale`` over entries."""
        if not self.error.numel():
            return 0.0
        s = self.scale.clamp_min(torch.finfo(self.scale.dtype).tiny)
        return float((self.error / s).max())

    @property
    def passed(self) -> bool:
        """Every entry within tolerance (and every error and tolerance finite: an infinite
        tolerance proves nothing)."""
        return bool(torch.isfinite(self.error).all() and torch.isfinite(self.tolerance).all()
                    and (self.error <= self.tolerance).all())

    def __str__(self) -> str:
        return (f"{self.claim}: worst error/tolerance {self.worst_ratio:.3g}, max relative error "
                f"{self.max_relative:.3g} ({'pass' if self.passed else 'FAIL'})")


def identity(block: ContextualBlock, update: ImplicitUpdate, *, claim: str = "identity",
             dense: bool | torch.Tensor = True, target_side: tuple | None = None) -> Check:
    """``block_{W+dW, s+ds}(reference) == block(target)`` for every entry of ``update``.

    ``dense``: where the updated side materialises ``W + dW`` (:func:`icl_verify.updates.updated_inputs`:
    everywhere, nowhere, or at the ``True`` entries of a boolean tensor over the leading dims).

    ``target_side``: the target side ``(hs_t, y_t)`` if already computed (a forward pass that
    went through the block at the update's target: pre-activations ``W_k z_t + b_k`` and output
    ``output(hs_t, s_t)``, leading dims those of ``update``); computed here otherwise."""
    with torch.no_grad():
        if target_side is None:
            target_side = block_forward(block, update.target)
        y_t = target_side[1]
        hs, s = updated_inputs(block, update, dense=dense)
    lead = update.right.ndim - 1
    bound, terms, y_u = tol.identity_bound(block, update, hs, s, entry_dims=lead, target_side=target_side)
    for side, y in (("target", y_t), ("updated", y_u)):  # finite values: a hypothesis of every claim
        check_finite(y, f"{claim}: the {side} side's output (an overflow in {y.dtype}?)")
    err = tol.entry_norm(y_t - y_u, entry_dims=lead)
    return Check(claim, err, bound, tol.entry_norm(y_t, entry_dims=lead), terms)


def theorem(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
            dense: bool = True) -> Check:
    """docs/theory.md §2: the query after ``context`` equals the query alone with ``W + dW(C)``, ``s + ds``."""
    return identity(block, context_update(block, context, query), claim="theorem", dense=dense)


def subset(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor,
           part: torch.Tensor) -> Check:
    """docs/theory.md §2: ``block(C, x) == block_{W + dW(Y)}(C \\ Y, x)`` for the part ``Y`` (mask ``part``)."""
    return identity(block, subset_update(block, context, query, part), claim="subset")


def positions(block: ContextualBlock, x: torch.Tensor, reference: str = "token") -> Check:
    """docs/theory.md §4: every position of ``x`` ``(B, T, d)`` against ``reference`` ("token" or "query")."""
    return identity(block, position_updates(block, x, reference=reference),
                    claim=f"positions[{reference}]")


def stack(model: Stack, x: torch.Tensor) -> Check:
    """docs/theory.md §4: the last token of ``x`` alone through every block with its update equals the
    stack's with-context output there.

    Errors propagate as ``E_l = sigma_l E_{l-1} + TAIL sqrt(V_l + D_l)``: ``sigma_l`` the spectral
    norm of the updated block's map from the query representation ``h`` to its output (what
    arrives, worst case), ``V_l`` the identity's own variance (:func:`tolerance.identity_bound`),
    and ``D_l`` (:func:`_decomposition_variance`) the rounding of the lone token's
    decomposition ``(z, s)`` recomputed at the propagated ``h``: once ``h`` differs from the
    reference token, that rounding is fresh and independent of the one baked into the update
    (zero at the first block, whose ``h`` is the reference token itself, bit for bit).
    Hypotheses: those of the identity at every block, first order in ``E_{l-1}``, and finite
    values and Jacobians of every block's map at the points visited (an overflow raises
    :class:`~icl_verify.errors.NonFiniteError`).
    """
    updates = stack_updates(model, x)
    with torch.no_grad():
        target = model(x)[:, -1]
    h = x[:, -1]
    bound = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for block, upd in zip(model.blocks, updates):
        own = identity(block, upd).tolerance
        sigma = tol.spectral_norm(lambda q, b=block, u=upd: apply_update(b, u, single_token(b, q)),
                                  [h], entry_dims=1)
        with torch.no_grad():
            here = single_token(block, h)
        fresh = (here.z != upd.reference.z).any(-1)
        if here.s is not None:
            fresh = fresh | (here.s != upd.reference.s).any(-1)
        if bool(fresh.any()):
            dec = _decomposition_variance(block, upd, h)
            own = torch.where(fresh, (own.square() + tol.TAIL ** 2 * dec).sqrt(), own)
        bound = sigma * bound + own
        with torch.no_grad():
            h = apply_update(block, upd, here)
    err = tol.entry_norm(h - target, entry_dims=1)
    return Check("stack", err, bound, tol.entry_norm(target, entry_dims=1))


DECOMPOSITION_SAMPLES = 8
"""Monte Carlo arithmetic draws of a lone token's decomposition rounding in :func:`stack`."""


def _decomposition_variance(block: ContextualBlock, upd: ImplicitUpdate, h: torch.Tensor) -> torch.Tensor:
    """``D = 2 E ||J e||^2`` per entry ``(B,)``: ``e`` the rounding of the lone token's
    decomposition ``(z, s)`` at ``h`` ``(B, d)``, estimated by :data:`DECOMPOSITION_SAMPLES` draws
    of Monte Carlo arithmetic (:mod:`icl_verify.random_rounding`; the layer can be any module),
    ``J`` the Jacobian of the updated block's map ``(z, s) -> output((W + dW) z + b, s + ds)``;
    twice: the rounding at ``h`` and the one at the reference token, independent once the two
    points differ."""
    parts = lambda d: (d.z,) if d.s is None else (d.z, d.s)  # noqa: E731
    with torch.no_grad():
        inputs = parts(single_token(block, h))
    draws = rounding_samples(lambda q: parts(single_token(block, q)), h, DECOMPOSITION_SAMPLES)
    fn = lambda z, s=None: apply_update(block, upd, Decomposition(z, s), dense=False)  # noqa: E731
    jv = torch.func.vmap(lambda *e: torch.func.jvp(fn, inputs, e)[1])(*draws)  # (K, B, d)
    var = 2 * tol.wide(jv).square().sum(-1).mean(0)
    if not torch.isfinite(var).all():
        raise NonFiniteError("the rounding of a lone token's decomposition is not finite here")
    return var


def _matrix_check(claim: str, rows) -> Check:
    """A check over first matrices: ``rows`` yields ``(lhs - rhs, elementwise bound, rhs)`` per
    matrix, each ``(..., m_k, d_z)``; error, tolerance and scale are Frobenius norms over all of
    them (``|lhs - rhs| <= bound`` elementwise implies it for the norms), in float32 at least.
    A non-finite matrix raises :class:`~icl_verify.errors.NonFiniteError`."""
    diffs, bounds, rhss = zip(*rows)
    if not all(torch.isfinite(t).all() for t in (*diffs, *rhss)):
        raise NonFiniteError(f"{claim}: a matrix overflowed in {rhss[0].dtype} (finite inputs must stay "
                             "finite; overflow is outside the error model)")
    lead = diffs[0].ndim - 2
    return Check(claim, *(tol.entry_norm(*(tol.wide(t) for t in ts), entry_dims=lead)
                          for ts in (diffs, bounds, rhss)))


def _step_spread(w: torch.Tensor, upd: ImplicitUpdate) -> torch.Tensor:
    """``S_i = |W| (|z_{i+1} - z_r| + |z_i - z_r| + |z_{i+1} - z_i|) |right_{i+1}|^T``: ``(B, n, m, d_z)``
    in float32 at least, the scale of the rounding of the left factors of two consecutive prefixes
    and of their difference."""
    z, zr, w = tol.wide(upd.target.z), tol.wide(upd.reference.z), tol.wide(w)
    spread = (tol.abs_matvec(w, z[:, 1:] - zr[:, 1:]) + tol.abs_matvec(w, z[:, :-1] - zr[:, :-1])
              + tol.abs_matvec(w, z[:, 1:] - z[:, :-1]))
    return spread[..., :, None] * tol.wide(upd.right[:, 1:]).abs()[..., None, :]


def _right_rounding(d: int, dtype: torch.dtype, device) -> float:
    """``c_r = (1+u)^2 / (1 - c(5, d))^2 - 1``: the relative rounding of each element of the computed
    ``right = z_r / ||z_r|| / ||z_r||`` (``||z_r||`` as ``m ||z_r / m||``: one division, the squares
    and their sum, the square root and its storage, the product by ``m``; then two divisions)."""
    return (1 + tol.unit_roundoff(dtype)) ** 2 / (1 - tol.rounding(5, d, dtype, device)) ** 2 - 1


def _underflow(left_sum: torch.Tensor, right_sum: torch.Tensor, products: float,
               ref_norm: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gradual underflow: a product, quotient or stored accumulation whose result lies among the
    subnormals errs by up to ``eta`` (half their spacing) beyond its relative rounding; sums and
    differences landing there are exact. Per element of the ``left right^T`` chains of a matrix
    claim: ``eta (right_sum + products + left_sum (1 + 1/||z_r||))``, with ``right_sum`` the sum of
    ``|right|`` over the stored left factors (each ``eta`` scaled by the right factor it
    multiplies), ``products`` the number of rounded products, and ``left_sum`` the sum of
    ``|left|`` over the right factors (``z_r / ||z_r|| / ||z_r||``: two quotients). Shapes
    ``(..., m, 1)``, ``(..., 1, d)``, ``(...)``; ``(..., m, d)`` in float32 at least."""
    eta = tol.half_subnormal_spacing(dtype)
    inv = (1 + 1 / tol.wide(ref_norm))[..., None, None]
    return eta * (right_sum + products + left_sum * inv)


def _same_evaluation(upd: ImplicitUpdate, full: ImplicitUpdate) -> None:
    """The telescoping claim's hypothesis: the empty prefix and the query alone, and the last
    prefix and ``dW(C)``'s own forward pass, evaluate the network input of the same sequence
    identically (bit for bit, as the same kernels do). Two evaluations by different kernels
    (autograd recording or not, a fast path) differ by the layer's own forward rounding, which no
    bound here covers; :class:`~icl_verify.errors.InconsistentEvaluationError` says so."""
    for what, a, b in (("the empty prefix and the query alone", upd.target.z[:, 0], upd.reference.z[:, 0]),
                       ("the query alone in the prefixes and in dW(C)", upd.reference.z[:, -1], full.reference.z),
                       ("the last prefix and dW(C)'s own forward pass", upd.target.z[:, -1], full.target.z)):
        if not torch.equal(a, b):
            raise InconsistentEvaluationError(
                f"telescoping: {what} give different network inputs z (max difference "
                f"{float((a - b).detach().abs().max()):.3g}): the prefix updates and dW(C) must come from the "
                "same kernels (the same autograd mode, no fast path), or the comparison measures the "
                "layer's forward rounding, which the error model does not bound")


def increments(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
               updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``W_{i+1} - W_i == (W (z_{i+1} - z_i)) z_x^T / ||z_x||^2``; entries ``(B, n)``.
    ``updates``: the prefix updates (:func:`~icl_verify.dynamics.prefix_updates`) if at hand.

    Bound per element (docs/error-model.md, "Matrix claims"), ``c(k, n)`` of
    :func:`~icl_verify.tolerance.rounding`: ``c(3, d) S_i + u (2|W| + |dW_i| + |dW_{i+1}|)
    + u/(1-u) |W_{i+1} - W_i|`` with ``S_i`` the step spread (:func:`_step_spread`)."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    with torch.no_grad():
        diffs = dynamics.increments(block, upd)
        formula = dynamics.increment_formula(block, upd)
        dt, dev = upd.right.dtype, upd.right.device
        c3, u = tol.rounding(3, upd.target.z.shape[-1], dt, dev), tol.unit_roundoff(dt)
        wide = tol.wide
        right = wide(upd.right[:, 1:]).abs()[..., None, :]
        ref_norm = tol.entry_norm(wide(upd.reference.z[:, 1:]), entry_dims=2)
        dz = wide(upd.target.z[:, 1:] - upd.target.z[:, :-1])
        return _matrix_check("increments", (
            (wide(a) - wide(f),
             c3 * _step_spread(w, upd) + u * (2 * wide(w).abs() + wide(dw[:, :-1]).abs()
                                               + wide(dw[:, 1:]).abs()) + u / (1 - u) * wide(a).abs()
             # three stored left factors (W_i's, W_{i+1}'s, the formula's) and three products
             + _underflow((wide(lf[:, :-1]).abs() + wide(lf[:, 1:]).abs() + tol.abs_matvec(wide(w), dz))[..., None],
                          3 * right, 3, ref_norm, dt),
             f)
            for w, a, f, dw, lf in zip(block.first_weights(), diffs, formula, upd.dense(), upd.left)))


def telescoping(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
                updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``sum_i (W_{i+1} - W_i) == dW(C)``, ``dW(C)`` from its own forward pass
    (with autograd recording under the same rule as the prefix pass); entries ``(B,)``.
    ``updates``: the prefix updates if at hand, from the same kernels.

    Hypothesis (checked, :func:`_same_evaluation`): both passes evaluate the network input of the
    same sequence identically. Bound per element (docs/error-model.md, "Matrix claims"):
    ``(c(1, n-1) + u/(1-u)) sum_i |W_{i+1} - W_i| + u/(1-u) |W_n|
    + c_end |W| |fl(z_n - z_r)| |right|^T``: ``dW_n`` and ``dW(C)`` round the same
    ``W (z_n - z_r) right^T`` apart, ``c_end = 2 c(2, d)`` where their right factors agree bit for
    bit, else ``2 ((1 + c(2, d)) (1 + c_r) / (1 - c_r) - 1)`` (``c_r``: :func:`_right_rounding`)."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    full = context_update(block, context, query)
    _same_evaluation(upd, full)
    with torch.no_grad():
        diffs = dynamics.increments(block, upd)
        last = upd[:, -1]
        dt, dev, wide = context.dtype, context.device, tol.wide
        u, n = tol.unit_roundoff(dt), context.shape[1]
        d = last.target.z.shape[-1]
        c_sum, c_r = tol.rounding(1, n - 1, dt, dev), _right_rounding(d, dt, dev)
        # dW_n and dW(C): the same products of left factors from one dz = fl(z_n - z_r) (the two
        # matmuls may round apart, c(1, d) each) and of right factors that agree where bit for bit
        c2 = tol.rounding(2, d, dt, dev)
        same_right = (last.right == full.right).all(-1)[..., None, None]
        c_end = torch.where(same_right, 2 * c2, 2 * ((1 + c2) * (1 + c_r) / (1 - c_r) - 1))
        dz = wide(last.target.z - last.reference.z)
        right = wide(last.right).abs()[..., None, :]
        ref_norm = tol.entry_norm(wide(last.reference.z), entry_dims=1)
        return _matrix_check("telescoping", (
            (wide(a.sum(1)) - wide(dw),
             (c_sum + u / (1 - u)) * wide(a).abs().sum(1) + u / (1 - u) * wide(wn).abs()
             + c_end * tol.abs_matvec(wide(w), dz)[..., :, None] * right
             # the sum telescopes to W_n - W_0 (W_0 = W): dW_n's and dW(C)'s factors and products
             + _underflow((wide(ln).abs() + wide(lc).abs())[..., None], 2 * right, 2, ref_norm, dt),
             dw)
            for w, a, dw, wn, ln, lc in zip(block.first_weights(), diffs, full.dense(), last.weights(block),
                                            last.left, full.left)))


def sgd(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
        updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``W_i - h grad L_i(W_i) == W_{i+1}`` (gradient by autograd); entries ``(B, n)``.
    ``updates``: the prefix updates if at hand.

    Bound per element (docs/error-model.md, "Matrix claims"): ``c_S S_i + u (2|W| + |dW_i|
    + |dW_{i+1}|) + u/(1-u) |step_i|`` with ``c_S = max(c(3, d), (c_r + c_P) / (1 - c_r))``,
    ``c_r`` the rounding of ``right`` (:func:`_right_rounding`), ``c_P = (1 + c_l)(1 + c(3, d))
    (1 + u) - 1`` (of ``h D_i``) and ``c_l = (1+u) / (1 - c(2, d)) - 1`` (of ``h``)."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    steps = dynamics.sgd_steps(block, upd)
    with torch.no_grad():
        weights = dynamics.prefix_weights(block, upd)
        dt, dev, d, wide = upd.right.dtype, upd.right.device, upd.target.z.shape[-1], tol.wide
        u, c3 = tol.unit_roundoff(dt), tol.rounding(3, d, dt, dev)
        c_r = _right_rounding(d, dt, dev)
        c_l = (1 + u) / (1 - tol.rounding(2, d, dt, dev)) - 1
        c_p = (1 + c_l) * (1 + c3) * (1 + u) - 1
        c_s = max(c3, (c_r + c_p) / (1 - c_r))
        z_x = wide(upd.reference.z[:, :-1])
        lr = 1 / z_x.square().sum(-1)[..., None, None]
        right = wide(upd.right[:, :-1]).abs()[..., None, :] + wide(upd.right[:, 1:]).abs()[..., None, :]
        ref_norm = tol.entry_norm(wide(upd.reference.z[:, 1:]), entry_dims=2)
        return _matrix_check("sgd", (
            (wide(step) - wide(wts[:, 1:]),
             c_s * _step_spread(w, upd) + u * (2 * wide(w).abs() + wide(dw[:, :-1]).abs()
                                                + wide(dw[:, 1:]).abs()) + u / (1 - u) * wide(step).abs()
             # dW_i's and dW_{i+1}'s factors and products, and the step's: the stored W (z_i - z_{i+1})
             # times z_x and lr, its product by z_x times lr, and lr times the gradient
             + _underflow((wide(lf[:, :-1]).abs() + wide(lf[:, 1:]).abs())[..., None],
                          right + lr * (z_x.abs()[..., None, :] + 1), 3, ref_norm, dt),
             wts[:, 1:])
            for w, step, wts, dw, lf in zip(block.first_weights(), steps, weights, upd.dense(), upd.left)))
