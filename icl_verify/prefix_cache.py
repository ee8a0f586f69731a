"""Prefix dynamics at the cost of one forward pass (docs/theory.md §3, §4).

In a causal block the context's own states never depend on the query, so the query placed after
``c_1..c_i`` can reuse the states of ``c_1..c_i`` (the key/value cache of attention, the hidden
state of a recurrence, the running sums of linear attention, the convolution window and scan
state of Griffin and Mamba). A layer declares this by two methods, the same idea as incremental
decoding:

- ``states(x, *, output=True) -> (A(x) or None, cache)``: one causal pass over the context
  ``x`` ``(B, n, d)``, returning the layer output (when asked) and a per-prefix cache;
- ``step(cache, q) -> (B, n+1, d)``: the layer output for ``n+1`` copies ``q`` ``(B, n+1, d)``,
  copy ``i`` placed at position ``i`` (0-based) after ``c_1..c_i``, in one batched pass.

A block has the fast path when it calls its ``layer`` attribute once per ``decompose`` on the
sequence of layer inputs and that layer has both methods (:func:`has_fast_path`); every other
block falls back to one forward pass per prefix, with the same result.

"The same result" is itself a claim, checked by :func:`prefix_agreement`,
:func:`position_agreement` and :func:`stack_agreement` (the property suite runs them on every
registered layer with a fast path): the fast and the generic updates differ by no more than
``TAIL`` standard deviations of the two computations' rounding, estimated by Monte Carlo
arithmetic (:mod:`icl_verify.error_model.monte_carlo`), since the error model bounds the rounding of an
identity, not that of two evaluations of a layer by different kernels.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

from . import error_model as tol
from .blocks import ContextualBlock, Decomposition, Stack
from .claims import Check
from .dynamics import check_prefix_inputs, prefix_targets, prefix_updates
from .errors import ICLVerifyError, NonFiniteError, ShapeError
from .error_model.monte_carlo import monte_carlo_samples
from .updates import (ImplicitUpdate, general_update, grad_only_if_inputs_ask, position_updates,
                      query_alone, single_token)
from .validation import check_finite

__all__ = ["has_fast_path", "fast_prefix_updates", "stack_prefix_updates", "prefix_agreement",
           "position_agreement", "stack_agreement"]


def has_fast_path(block: nn.Module) -> bool:
    """Whether ``block.layer`` provides ``states`` and ``step`` (see the module docstring)."""
    layer = getattr(block, "layer", None)
    return callable(getattr(layer, "states", None)) and callable(getattr(layer, "step", None))


class _Cached(nn.Module):
    """Stands in for a block's layer: records the context cache (``cache is None``) or answers
    the copies from a cache."""

    def __init__(self, layer: nn.Module, cache=None, output: bool = True):
        super().__init__()
        self.layer, self.cache, self.output, self.calls = layer, cache, output, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.cache is not None:
            return self.layer.step(self.cache, x)
        out, self.recorded = self.layer.states(x, output=self.output)
        return x if out is None else out  # without output, a placeholder nobody reads


def _with_layer(block: ContextualBlock, layer: nn.Module) -> ContextualBlock:
    """A shallow copy of ``block`` whose ``layer`` is ``layer`` (``block`` is untouched)."""
    clone = copy.copy(block)
    clone._modules = dict(block._modules)
    clone._modules["layer"] = layer
    return clone


def _run(block: ContextualBlock, stand_in: _Cached, fn):
    result = fn(_with_layer(block, stand_in))
    if stand_in.calls != 1:
        raise ICLVerifyError(
            f"{type(block).__name__}.decompose called its layer {stand_in.calls} times; the fast "
            "path needs exactly one call on the sequence of layer inputs"
        )
    return result


def _context_states(block: ContextualBlock, context: torch.Tensor, output: bool):
    """One causal pass of ``context`` ``(B, n, d)``: (block output ``(B, n, d)`` or None, cache)."""
    stand_in = _Cached(block.layer, output=output)
    out = _run(block, stand_in, (lambda b: b(context)) if output else (lambda b: b.decompose(context)))
    return (out if output else None), stand_in.recorded


def _fast_copies(block: ContextualBlock, cache, queries: torch.Tensor) -> Decomposition:
    """Decomposition ``(B, n+1)`` of the copies ``queries`` ``(B, n+1, d)`` from the cache."""
    return _run(block, _Cached(block.layer, cache), lambda b: b.decompose(queries))


def _update(block: ContextualBlock, target: Decomposition, reference: Decomposition, block_index):
    return general_update(block.first_weights(), target, reference, block=block_index,
                          positions=torch.arange(target.z.shape[1])[None, :])


@grad_only_if_inputs_ask
def fast_prefix_updates(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *,
                        block_index: int | None = None) -> ImplicitUpdate:
    """Same result as :func:`icl_verify.dynamics.prefix_updates` (``dW(c_1..c_i)``, ``i = 0..n``,
    against the query alone; leading dims ``(B, n+1)``), at about the cost of one forward pass:
    one causal pass over ``context`` ``(B, n, d)`` and one batched pass of ``n+1`` copies of
    ``query`` ``(B, d)``. Falls back to ``prefix_updates`` when the block has no fast path."""
    if not has_fast_path(block):
        return prefix_updates(block, context, query, block_index=block_index)
    check_prefix_inputs(block, context, query, block_index)
    _, cache = _context_states(block, context, output=False)
    copies = query[:, None].expand(-1, context.shape[1] + 1, -1)
    target = _fast_copies(block, cache, copies)
    return _update(block, target, query_alone(block, query, target), block_index)


@grad_only_if_inputs_ask
def stack_prefix_updates(stack: Stack, context: torch.Tensor, query: torch.Tensor, *,
                         fast: bool = True) -> list[ImplicitUpdate]:
    """Prefix dynamics of every block of ``stack``: entry ``l`` has leading dims ``(B, n+1)``.

    For prefix ``i`` (``i = 0..n``) block ``l``'s target is the query's position in
    ``[c_1..c_i, x]`` as seen by block ``l`` (its input ``X^l``) and its reference is that
    representation of the query, ``q^l_i = X^l_{i+1}``, alone; so entry ``[l][:, i]`` equals
    ``stack_updates(stack, [c_1..c_i, x])[l]``.

    ``fast=True``: one causal forward of ``context`` ``(B, n, d)`` through the stack gives every
    block's cache; block ``l``'s copies ``q^l_i`` are block ``l-1``'s batched step outputs (blocks
    without a fast path do their copies prefix by prefix). ``fast=False``: the generic method,
    one forward pass of the stack per prefix.
    """
    check_prefix_inputs(stack, context, query)
    blocks = list(stack.blocks)
    n = context.shape[1]
    if not fast:
        seqs = [stack.decompositions(torch.cat([context[:, :i], query[:, None]], dim=1)) for i in range(n + 1)]
        updates = []
        for l, block in enumerate(blocks):
            target = [decs[l].at(-1) for _, decs in seqs]
            z = torch.stack([d.z for d in target], dim=1)
            s = None if target[0].s is None else torch.stack([d.s for d in target], dim=1)
            copies = torch.stack([xs[l][:, -1] for xs, _ in seqs], dim=1)
            updates.append(_update(block, Decomposition(z, s), single_token(block, copies), l))
        return updates
    updates, x, copies = [], context, query[:, None].expand(-1, n + 1, -1)
    for l, block in enumerate(blocks):
        last = l == len(blocks) - 1
        if has_fast_path(block):
            x_next, cache = _context_states(block, x, output=not last)
            target = _fast_copies(block, cache, copies)
        else:
            target = prefix_targets(block, x, copies)
            x_next = None if last else block(x)
        ref = query_alone(block, query, target) if l == 0 else single_token(block, copies)
        updates.append(_update(block, target, ref, l))  # block 0's copies are all the query
        if not last:
            copies = block.output(block.pre_activations(target.z), target.s)
            x = x_next
    return updates


def _fast_positions(block: ContextualBlock, x: torch.Tensor, reference: str) -> ImplicitUpdate:
    """:func:`~icl_verify.updates.position_updates` of ``x`` ``(B, T, d)``, ``T >= 2``, through the
    fast path: one causal pass over ``x_1..x_{T-1}``, then one batched step whose copy ``t`` is
    ``x_{t+1}`` itself (distinct copies, each after its own prefix); leading dims ``(B, T)``."""
    _, cache = _context_states(block, x[:, :-1], output=False)
    target = _fast_copies(block, cache, x)
    ref = single_token(block, x) if reference == "token" else query_alone(block, x[:, -1], target)
    return _update(block, target, ref, None)


AGREEMENT_SAMPLES = 8
"""Monte Carlo arithmetic draws per side of a fast/generic comparison."""

Factors = Callable[[torch.Tensor], Sequence[ImplicitUpdate]]


def _factors(fn: Factors) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``fn`` on a sequence ``(*E, T, d)`` with any leading dims ``E``: every factor of every
    update it returns (``left_k``, ``right``, ``shift``), each ``(*E, P, p)``."""
    def run(x: torch.Tensor) -> list[torch.Tensor]:
        lead = x.shape[:-2]
        out = []
        for upd in fn(x.reshape(-1, *x.shape[-2:])):
            for t in (*upd.left, upd.right, upd.shift):
                if t is not None:
                    out.append(t.reshape(*lead, *t.shape[1:]))
        return out
    return run


def _rounding_variance(fn, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``E ||e||^2`` per entry ``(B, P)`` over every factor, ``e`` the rounding of ``fn``'s
    factors at ``x`` (:data:`AGREEMENT_SAMPLES` draws of Monte Carlo arithmetic)."""
    draws = monte_carlo_samples(fn, x, AGREEMENT_SAMPLES, seed=seed)
    var = sum(tol.wide(d).square().flatten(3).sum(-1) for d in draws).mean(0)
    if not torch.isfinite(var).all():
        raise NonFiniteError("the rounding of the fast or the generic updates is not finite here")
    return var


def _agreement(claim: str, fast: Factors, generic: Factors, x: torch.Tensor) -> Check:
    """``fast(x) == generic(x)`` within ``TAIL sqrt(V_fast + V_generic)`` per entry: ``x`` the
    sequence ``(B, T, d)``, each side a list of updates whose leading dims ``(B, P)`` are the
    entries, ``V`` each side's rounding variance (the two roundings are independent)."""
    f, g = _factors(fast), _factors(generic)
    with torch.no_grad():
        a, b = f(x), g(x)
    for side, ts in (("fast", a), ("generic", b)):
        for t in ts:
            check_finite(t, f"{claim}: a factor of the {side} updates (an overflow in {t.dtype}?)")
    flat = lambda ts: [tol.wide(t).flatten(2) for t in ts]  # noqa: E731  each (B, P, p)
    err = tol.entry_norm(*(u - v for u, v in zip(flat(a), flat(b), strict=True)), entry_dims=2)
    bound = tol.TAIL * (_rounding_variance(f, x, 0) + _rounding_variance(g, x, 1)).sqrt()
    return Check(claim, err, bound, tol.entry_norm(*flat(b), entry_dims=2))


def prefix_agreement(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor) -> Check:
    """:func:`fast_prefix_updates` against :func:`~icl_verify.dynamics.prefix_updates`: ``context``
    ``(B, n, d)``, ``n >= 1``, ``query`` ``(B, d)``; entries ``(B, n+1)`` (one per prefix)."""
    split = lambda x: (x[:, :-1], x[:, -1])  # noqa: E731
    return _agreement("fast[prefixes]",
                      lambda x: [fast_prefix_updates(block, *split(x))],
                      lambda x: [prefix_updates(block, *split(x))],
                      torch.cat([context, query[:, None]], dim=1))


def position_agreement(block: ContextualBlock, x: torch.Tensor, reference: str = "token") -> Check:
    """Every position of ``x`` ``(B, T, d)``, ``T >= 2``, through the fast path (each copy a
    distinct token after its own prefix, :func:`_fast_positions`) against
    :func:`~icl_verify.updates.position_updates`; entries ``(B, T)``."""
    if x.shape[1] < 2:
        raise ShapeError(f"every position through the fast path needs a sequence of at least two tokens, "
                         f"got {x.shape[1]}")
    return _agreement("fast[positions]",
                      lambda y: [_fast_positions(block, y, reference)],
                      lambda y: [position_updates(block, y, reference=reference)], x)


def stack_agreement(stack: Stack, context: torch.Tensor, query: torch.Tensor) -> Check:
    """:func:`stack_prefix_updates` fast against generic (``fast=False``); entries ``(B, n+1)``,
    every block's factors together."""
    split = lambda x: (x[:, :-1], x[:, -1])  # noqa: E731
    return _agreement("fast[stack]",
                      lambda x: stack_prefix_updates(stack, *split(x)),
                      lambda x: stack_prefix_updates(stack, *split(x), fast=False),
                      torch.cat([context, query[:, None]], dim=1))
