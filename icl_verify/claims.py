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
from .updates import (
    ImplicitUpdate,
    apply_update,
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


def _combine(claim: str, checks: list[Check]) -> Check:
    cat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    names = set.intersection(*(set(c.terms) for c in checks)) if checks else set()
    return Check(claim, *(cat([getattr(c, f) for c in checks]) for f in ("error", "tolerance", "scale")),
                 {n: cat([c.terms[n] for c in checks]) for n in sorted(names)})


def identity(block: ContextualBlock, update: ImplicitUpdate, *, claim: str = "identity",
             dense: bool = True) -> Check:
    """``block_{W+dW, s+ds}(reference) == block(target)`` for every entry of ``update``."""
    with torch.no_grad():
        hs_t = block.pre_activations(update.target.z)
        y_t = block.output(hs_t, update.target.s)
        hs, s = updated_inputs(block, update, dense=dense)
        y_u = block.output(hs, s)
    lead = update.right.ndim - 1
    bound, terms = tol.identity_bound(block, update, hs, s, y_u, entry_dims=lead,
                                      target_side=(hs_t, y_t))
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
    stack's with-context output there. Errors propagate as ``E_l = sigma_l E_{l-1} + tol_l``."""
    updates = stack_updates(model, x)
    with torch.no_grad():
        target = model(x)[:, -1]
    h = x[:, -1]
    bound = torch.zeros(x.shape[0], dtype=x.dtype)
    for block, upd in zip(model.blocks, updates):
        own = identity(block, upd).tolerance
        sigma = tol.spectral_norm(lambda q, b=block, u=upd: apply_update(b, u, single_token(b, q)),
                                  [h], entry_dims=1)
        bound = sigma * bound + own
        with torch.no_grad():
            h = apply_update(block, upd, single_token(block, h))
    err = tol.entry_norm(h - target, entry_dims=1)
    return Check("stack", err, bound, tol.entry_norm(target, entry_dims=1))


def _matrix_check(claim: str, rows) -> Check:
    """A check over first matrices: ``rows`` yields ``(lhs - rhs, elementwise bound, rhs)`` per
    matrix, each ``(..., m_k, d_z)``; error, tolerance and scale are Frobenius norms over all of them."""
    err = sq = scale = 0
    for diff, bound, rhs in rows:
        err = err + (diff ** 2).sum((-2, -1))
        sq = sq + (bound ** 2).sum((-2, -1))
        scale = scale + (rhs ** 2).sum((-2, -1))
    return Check(claim, err ** 0.5, sq ** 0.5, scale ** 0.5)


def _step_spread(w: torch.Tensor, upd: ImplicitUpdate) -> torch.Tensor:
    """``|W| (|z_{i+1} - z_r| + |z_i - z_r| + |z_{i+1} - z_i|) |right_{i+1}|^T``: ``(B, n, m, d_z)``,
    the rounding scale of the left factors of two consecutive prefixes and of their difference."""
    z, zr = upd.target.z, upd.reference.z
    spread = (tol.abs_matvec(w, z[:, 1:] - zr[:, 1:]) + tol.abs_matvec(w, z[:, :-1] - zr[:, :-1])
              + tol.abs_matvec(w, z[:, 1:] - z[:, :-1]))
    return spread[..., :, None] * upd.right[:, 1:].abs()[..., None, :]


def increments(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
               updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``W_{i+1} - W_i == (W (z_{i+1} - z_i)) z_x^T / ||z_x||^2``; entries ``(B, n)``.
    ``updates``: the prefix updates (:func:`~icl_verify.dynamics.prefix_updates`) if at hand.

    Bound per element: ``gamma(d+3) [|W|(|z_{i+1}-z_r| + |z_i-z_r| + |z_{i+1}-z_i|) |right|^T
    + 2|W| + |dW_i| + |dW_{i+1}|]``."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    with torch.no_grad():
        diffs = dynamics.increments(block, upd)
        formula = dynamics.increment_formula(block, upd)
        g = tol.gamma(upd.target.z.shape[-1] + 3, upd.right.dtype)
        return _matrix_check("increments", (
            (a - f, g * (_step_spread(w, upd) + 2 * w.abs() + dw[:, :-1].abs() + dw[:, 1:].abs()), f)
            for (w, _), a, f, dw in zip(block.first_layers(), diffs, formula, upd.dense())))


def telescoping(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
                updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``sum_i (W_{i+1} - W_i) == dW(C)``, ``dW(C)`` from its own forward pass;
    entries ``(B,)``. ``updates``: the prefix updates if at hand.

    Bound per element: ``gamma(n+2) sum_i |W_{i+1} - W_i| + 2u (|W| + |dW(C)|)``."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    with torch.no_grad():
        diffs = dynamics.increments(block, upd)
        full = context_update(block, context, query).dense()
        g, u = tol.gamma(context.shape[1] + 2, context.dtype), tol.unit_roundoff(context.dtype)
        return _matrix_check("telescoping", (
            (a.sum(1) - dw, g * a.abs().sum(1) + 2 * u * (w.abs() + dw.abs()), dw)
            for (w, _), a, dw in zip(block.first_layers(), diffs, full)))


def sgd(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
        updates: ImplicitUpdate | None = None) -> Check:
    """docs/theory.md §3: ``W_i - h grad L_i(W_i) == W_{i+1}`` (gradient by autograd); entries ``(B, n)``.
    ``updates``: the prefix updates if at hand.

    Bound per element: ``gamma(d+4) [3|W| + 2|dW_i| + 2|dW_{i+1}| + |W|(|z_i-z_r| + |z_{i+1}-z_r|
    + |z_{i+1}-z_i|) |right|^T]``."""
    upd = dynamics.prefix_updates(block, context, query) if updates is None else updates
    steps = dynamics.sgd_steps(block, upd)
    with torch.no_grad():
        weights = dynamics.prefix_weights(block, upd)
        g = tol.gamma(upd.target.z.shape[-1] + 4, upd.right.dtype)
        return _matrix_check("sgd", (
            (step - wts[:, 1:],
             g * (3 * w.abs() + 2 * dw[:, :-1].abs() + 2 * dw[:, 1:].abs() + _step_spread(w, upd)),
             wts[:, 1:])
            for (w, _), step, wts, dw in zip(block.first_layers(), steps, weights, upd.dense())))
