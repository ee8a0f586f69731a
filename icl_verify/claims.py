"""Each claim of docs/theory.md §2-§4 as a function returning a :class:`Check`: the error between the two
sides per entry (batch element, position, prefix), the tolerance of the error model
(:mod:`icl_verify.error_model`) and a scale for relative errors. ``icl-verify verify``, the
property suite and the benchmarks all call these, so every claim has one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import dynamics
from .blocks import ContextualBlock, Stack
from .errors import InconsistentEvaluationError, NonFiniteError
from .error_model import identity_bound, matrix, spectral_norm
from .error_model import stack as stack_bound
from .error_model.primitives import TAIL, entry_norm, wide
from .validation import check_finite
from .updates import (
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
            :func:`icl_verify.error_model.identity_bound`); empty where not broken down.
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
    bound, terms, y_u = identity_bound(block, update, hs, s, entry_dims=lead, target_side=target_side)
    for side, y in (("target", y_t), ("updated", y_u)):  # finite values: a hypothesis of every claim
        check_finite(y, f"{claim}: the {side} side's output (an overflow in {y.dtype}?)")
    err = entry_norm(y_t - y_u, entry_dims=lead)
    return Check(claim, err, bound, entry_norm(y_t, entry_dims=lead), terms)


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
    arrives, worst case), ``V_l`` the identity's own variance (:func:`~icl_verify.error_model.identity_bound`),
    and ``D_l`` (:func:`~icl_verify.error_model.stack.decomposition_variance`) the rounding of the lone token's
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
        sigma = spectral_norm(lambda q, b=block, u=upd: apply_update(b, u, single_token(b, q)),
                              [h], entry_dims=1)
        with torch.no_grad():
            here = single_token(block, h)
        fresh = (here.z != upd.reference.z).any(-1)
        if here.s is not None:
            fresh = fresh | (here.s != upd.reference.s).any(-1)
        if bool(fresh.any()):
            dec = stack_bound.decomposition_variance(block, upd, h)
            own = torch.where(fresh, (own.square() + TAIL ** 2 * dec).sqrt(), own)
        bound = sigma * bound + own
        with torch.no_grad():
            h = apply_update(block, upd, here)
    err = entry_norm(h - target, entry_dims=1)
    return Check("stack", err, bound, entry_norm(target, entry_dims=1))


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
    return Check(claim, *(entry_norm(*(wide(t) for t in ts), entry_dims=lead)
                          for ts in (diffs, bounds, rhss)))


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
    Bound per element: :func:`icl_verify.error_model.matrix.increment_bounds`."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    with torch.no_grad():
        diffs = dynamics.increments(block, upd)
        formula = dynamics.increment_formula(block, upd)
        bounds = matrix.increment_bounds(block, upd, diffs)
        return _matrix_check("increments", ((wide(a) - wide(f), bound, f)
                                            for a, f, bound in zip(diffs, formula, bounds)))


def telescoping(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
                updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``sum_i (W_{i+1} - W_i) == dW(C)``, ``dW(C)`` from its own forward pass
    (with autograd recording under the same rule as the prefix pass); entries ``(B,)``.
    ``updates``: the prefix updates if at hand, from the same kernels.

    Hypothesis (checked, :func:`_same_evaluation`): both passes evaluate the network input of the
    same sequence identically. Bound per element: :func:`icl_verify.error_model.matrix.telescoping_bounds`."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    full = context_update(block, context, query)
    _same_evaluation(upd, full)
    with torch.no_grad():
        diffs = dynamics.increments(block, upd)
        bounds = matrix.telescoping_bounds(block, upd, full, diffs, context.shape[1])
        return _matrix_check("telescoping", ((wide(a.sum(1)) - wide(dw), bound, dw)
                                             for a, dw, bound in zip(diffs, full.dense(), bounds)))


def sgd(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
        updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``W_i - h grad L_i(W_i) == W_{i+1}`` (gradient by autograd); entries ``(B, n)``.
    ``updates``: the prefix updates if at hand.
    Bound per element: :func:`icl_verify.error_model.matrix.sgd_bounds`."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    steps = dynamics.sgd_steps(block, upd)
    with torch.no_grad():
        weights = dynamics.prefix_weights(block, upd)
        bounds = matrix.sgd_bounds(block, upd, steps)
        return _matrix_check("sgd", ((wide(step) - wide(wts[:, 1:]), bound, wts[:, 1:])
                                     for step, wts, bound in zip(steps, weights, bounds)))
