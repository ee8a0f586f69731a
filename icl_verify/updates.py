"""Implicit updates (docs/theory.md §2, §4): the rank-one change of each first dense matrix, and the
bypass shift, that turn a reference computation of a block into a target one.

For target network input/bypass ``z_t, s_t`` and reference ``z_r, s_r``::

    dW_k = (W_k (z_t - z_r)) z_r^T / ||z_r||^2      (one per first matrix W_k)
    ds   = s_t - s_r

so that ``output([(W_k + dW_k) z_r + b_k], s_r + ds) = output([W_k z_t + b_k], s_t)``.
Updates are kept factored, ``dW_k = left_k right^T``; :meth:`ImplicitUpdate.dense` materialises.
Everything here reads only ``z``, ``s`` and ``W`` (:class:`~icl_verify.blocks.ContextualBlock`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch

from .blocks import ContextualBlock, Decomposition, Stack
from .validation import check_finite, check_tensor, module_dtype
from .errors import DegenerateReferenceError, NonFiniteError, ShapeError, where


F = TypeVar("F", bound=Callable)


def grad_only_if_inputs_ask(fn: F) -> F:
    """Run ``fn`` with autograd recording only when one of its tensor arguments requires grad.

    A module's parameters require grad by default; updates computed from them would otherwise
    carry an autograd graph nobody asked for (memory, and warnings when read as numbers). Pass
    inputs with ``requires_grad=True`` to differentiate through an update.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asked = any(isinstance(a, torch.Tensor) and a.requires_grad
                    for a in (*args, *kwargs.values()))
        with torch.set_grad_enabled(torch.is_grad_enabled() and asked):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class ImplicitUpdate:
    """Factored implicit updates over leading dims ``(...)`` (batch, position, prefix, ...).

    Attributes:
        left: per first matrix ``k``, ``W_k (z_t - z_r)`` with shape ``(..., m_k)``.
        right: ``z_r / ||z_r||^2``, shape ``(..., d_z)``, shared by every first matrix.
        shift: ``s_t - s_r`` ``(..., d_out)``, or ``None`` for blocks without bypass.
        target: the target decomposition (leading dims ``(...)``).
        reference: the reference decomposition (leading dims ``(...)``).
    """

    left: tuple[torch.Tensor, ...]
    right: torch.Tensor
    shift: torch.Tensor | None
    target: Decomposition
    reference: Decomposition

    def dense(self) -> tuple[torch.Tensor, ...]:
        """``dW_k = left_k right^T`` for every first matrix: ``(..., m_k, d_z)``."""
        return tuple(u[..., :, None] * self.right[..., None, :] for u in self.left)

    def weights(self, block: ContextualBlock) -> tuple[torch.Tensor, ...]:
        """The updated matrices ``W_k + dW_k``: ``(..., m_k, d_z)``."""
        return tuple(dw.add_(w) for w, dw in zip(block.first_weights(), self.dense()))  # one (m, d) buffer each

    def norms(self) -> torch.Tensor:
        """Frobenius norms ``||dW_k||`` stacked on a last axis: ``(..., K)``."""
        r = self.right.norm(dim=-1)
        return torch.stack([u.norm(dim=-1) * r for u in self.left], dim=-1)

    def __getitem__(self, index) -> "ImplicitUpdate":
        """Index the leading dims, for example ``update[:, t]`` for position ``t``."""
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return ImplicitUpdate(
            tuple(u[index] for u in self.left),
            self.right[index],
            pick(self.shift),
            Decomposition(self.target.z[index], pick(self.target.s)),
            Decomposition(self.reference.z[index], pick(self.reference.s)),
        )


def safe_norm(x: torch.Tensor) -> torch.Tensor:
    """``||x||`` over the last dim, keepdim, computed as ``m ||x / m||`` (``m = max |x_i|``) so that
    it neither overflows nor underflows where the norm itself is representable."""
    m = x.abs().amax(-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    return m * (x / m).norm(dim=-1, keepdim=True)


def general_update(
    weights: Sequence[torch.Tensor],
    target: Decomposition,
    reference: Decomposition,
    *,
    block: int | None = None,
    positions: torch.Tensor | None = None,
) -> ImplicitUpdate:
    """The general form (docs/theory.md §2): the update turning ``reference`` into ``target``.

    Args:
        weights: first dense matrices ``W_k`` ``(m_k, d_z)``.
        target: decomposition of the target computation, leading dims ``(...)``.
        reference: decomposition of the reference computation, the same leading dims.
        block: block index, for error messages.
        positions: position index of each leading entry, for error messages (optional).

    Raises:
        DegenerateReferenceError: ``z_r = 0`` somewhere (no such rank-one update exists).
        ShapeError: target and reference do not match.
    """
    z_t, z_r = target.z, reference.z
    if z_t.shape != z_r.shape:
        raise ShapeError(f"target z {tuple(z_t.shape)} and reference z {tuple(z_r.shape)} differ{where(block)}")
    if (target.s is None) != (reference.s is None):
        raise ShapeError(f"one of target and reference has a bypass, the other not{where(block)}")
    check_finite(z_t, "target network input z", block=block)
    check_finite(z_r, "reference network input z", block=block)
    norm = safe_norm(z_r)
    if not torch.isfinite(norm).all():
        raise NonFiniteError(f"||z_r|| overflows {z_r.dtype} (max {float(norm.max().detach()):.3g}): the right "
                             f"factor z_r / ||z_r||^2 would round to 0{where(block)}")
    right = z_r / norm / norm  # z_r / ||z_r||^2 without forming the square, which may overflow
    bad = (norm.squeeze(-1) == 0) | ~torch.isfinite(right).all(-1)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        pos = None
        if positions is not None:
            pos = int(positions.expand(bad.shape)[idx])
        raise DegenerateReferenceError(
            f"reference network input z_r is zero or too small for {z_r.dtype} "
            f"(||z_r|| = {float(norm[idx].detach()):.3g}) at index {idx}: "
            f"no rank-one update u z_r^T / ||z_r||^2 exists{where(block, pos)}"
        )
    dz = z_t - z_r
    left = tuple(torch.nn.functional.linear(dz, w) for w in weights)
    shift = None if target.s is None else target.s - reference.s
    for name, t in [("left factor W (z_t - z_r)", u) for u in left] + [("bypass shift", shift)]:
        if t is not None:
            check_finite(t, f"the update's {name} (overflow in {t.dtype}?)", block=block)
    return ImplicitUpdate(left, right, shift, target, reference)


def updated_inputs(
    block: ContextualBlock,
    update: ImplicitUpdate,
    reference: Decomposition | None = None,
    *,
    dense: bool | torch.Tensor = True,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The pre-activations ``(W_k + dW_k) z_r + b_k`` and bypass ``s_r + ds`` of the updated
    block at ``reference`` (default: the update's own): what :meth:`ContextualBlock.output` reads.

    ``dense=True`` materialises ``W_k + dW_k`` (the claim about the weight matrix, as stated);
    ``dense=False`` uses ``W_k z + left_k (right . z)`` (same thing, O(m + d) per position); a
    boolean tensor over the leading dims materialises at its ``True`` entries only.
    """
    ref = update.reference if reference is None else reference
    z = ref.z
    if isinstance(dense, torch.Tensor):
        hs, s = updated_inputs(block, update, ref, dense=False)
        if dense.any():
            idx = dense.nonzero(as_tuple=True)
            sub = Decomposition(z[idx], None if ref.s is None else ref.s[idx])
            for h, h_dense in zip(hs, updated_inputs(block, update[idx], sub, dense=True)[0]):
                h[idx] = h_dense
        return hs, s
    hs = []
    if dense:
        for w_new, (_, b) in zip(update.weights(block), block.first_layers()):
            h = torch.matmul(w_new, z[..., None])[..., 0]
            hs.append(h if b is None else h + b)
    else:
        coeff = (update.right * z).sum(-1, keepdim=True)
        for u, h in zip(update.left, block.pre_activations(z)):
            hs.append(torch.addcmul(h, u, coeff))
    return hs, None if ref.s is None else ref.s + update.shift


def apply_update(
    block: ContextualBlock,
    update: ImplicitUpdate,
    reference: Decomposition | None = None,
    *,
    dense: bool = True,
) -> torch.Tensor:
    """Output ``(..., d_out)`` of ``block`` on ``reference`` (default: the update's own) with
    ``W_k + dW_k`` and bypass ``s + ds`` (see :func:`updated_inputs`)."""
    return block.output(*updated_inputs(block, update, reference, dense=dense))


def target_output(block: ContextualBlock, update: ImplicitUpdate) -> torch.Tensor:
    """The block's own output at the update's target: ``(..., d_out)``."""
    return block_forward(block, update.target)[1]


def block_forward(block: ContextualBlock, dec: Decomposition) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The block's own forward from a decomposition ``(z, s)``: pre-activations ``W_k z + b_k``
    ``(..., m_k)`` and output ``output(hs, s)`` ``(..., d_out)``."""
    hs = block.pre_activations(dec.z)
    return hs, block.output(hs, dec.s)


def single_token(block: ContextualBlock, tokens: torch.Tensor) -> Decomposition:
    """Decomposition of each token of ``tokens`` ``(..., d)`` standing alone: leading dims ``(...)``."""
    lead = tokens.shape[:-1]
    dec = block.decompose(tokens.reshape(-1, 1, tokens.shape[-1])).at(0)
    shape = lambda x: None if x is None else x.reshape(*lead, x.shape[-1])  # noqa: E731
    return Decomposition(shape(dec.z), shape(dec.s))


def query_alone(block: ContextualBlock, query: torch.Tensor, like: Decomposition) -> Decomposition:
    """The query ``(B, d)`` alone through ``block``, broadcast over the positions (or copies)
    of ``like`` (leading dims ``(B, T)``): the shared reference of every position."""
    ref = single_token(block, query)
    return Decomposition(ref.z[:, None].expand_as(like.z),
                         None if ref.s is None else ref.s[:, None].expand_as(like.s))


def _checked(block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, block_index):
    dtype = module_dtype(block)
    check_tensor(query, "query", ndim=2, dtype=dtype, block=block_index)
    check_tensor(context, "context", ndim=3, dtype=dtype, width=query.shape[-1], block=block_index)
    if context.shape[0] != query.shape[0]:
        raise ShapeError(
            f"context batch {context.shape[0]} and query batch {query.shape[0]} differ{where(block_index)}"
        )
    return dtype


@grad_only_if_inputs_ask
def context_update(
    block: ContextualBlock, context: torch.Tensor, query: torch.Tensor, *, block_index: int | None = None
) -> ImplicitUpdate:
    """The theorem's update (docs/theory.md §2): target = ``query`` after ``context``, reference =
    ``query`` alone. ``context`` ``(B, n, d)`` (``n`` may be 0), ``query`` ``(B, d)``; leading
    dims of the result ``(B,)``."""
    _checked(block, context, query, block_index)
    seq = torch.cat([context, query[:, None]], dim=1)
    n = context.shape[1]
    return general_update(
        block.first_weights(),
        block.decompose(seq).at(-1),
        single_token(block, query),
        block=block_index,
        positions=torch.tensor(n),
    )


@grad_only_if_inputs_ask
def subset_update(
    block: ContextualBlock,
    context: torch.Tensor,
    query: torch.Tensor,
    part: torch.Tensor,
    *,
    block_index: int | None = None,
) -> ImplicitUpdate:
    """The update for a part ``Y`` of the context: target = ``query`` after ``C``, reference =
    ``query`` after ``C \\ Y`` (order kept). ``part`` is a boolean mask ``(n,)``, True on ``Y``."""
    _checked(block, context, query, block_index)
    if part.dtype != torch.bool or part.shape != context.shape[1:2]:
        raise ShapeError(
            f"part must be a boolean mask of shape ({context.shape[1]},), got {part.dtype} {tuple(part.shape)}"
        )
    full = torch.cat([context, query[:, None]], dim=1)
    rest = torch.cat([context[:, ~part], query[:, None]], dim=1)
    return general_update(
        block.first_weights(),
        block.decompose(full).at(-1),
        block.decompose(rest).at(-1),
        block=block_index,
        positions=torch.tensor(context.shape[1]),
    )


@grad_only_if_inputs_ask
def position_updates(
    block: ContextualBlock,
    x: torch.Tensor,
    *,
    reference: str = "token",
    block_index: int | None = None,
    decomposition: Decomposition | None = None,
) -> ImplicitUpdate:
    """Updates for every position of ``x`` ``(B, T, d)`` at once (docs/theory.md §4); leading dims ``(B, T)``.

    ``reference="token"``: position ``t`` against token ``x_t`` alone (what the context did to
    token ``t``); ``reference="query"``: against the last token ``x_T`` alone (the second
    paper's choice). One causal forward plus one batched pass of length-1 sequences;
    ``decomposition``: ``block.decompose(x)`` if already computed (then no causal forward here).
    """
    _check_sequence(x, block, block_index)
    target = block.decompose(x) if decomposition is None else decomposition
    return _position_updates(block, x, target, reference, block_index)


def _check_sequence(x: torch.Tensor, module, block_index: int | None = None) -> None:
    check_tensor(x, "sequence", ndim=3, dtype=module_dtype(module), block=block_index)
    if x.shape[1] == 0:
        raise ShapeError(f"sequence has no positions{where(block_index)}")


def _position_updates(block: ContextualBlock, x: torch.Tensor, target: Decomposition,
                      reference: str, block_index: int | None, first: int = 0) -> ImplicitUpdate:
    """:func:`position_updates` from the block's decomposition ``target`` of ``x`` (``x`` and
    ``target`` hold positions ``first, first + 1, ...`` of the sequence)."""
    if reference == "token":
        ref = single_token(block, x)
    elif reference == "query":
        ref = query_alone(block, x[:, -1], target)
    else:
        raise ValueError(f"reference must be 'token' or 'query', got {reference!r}")
    return general_update(
        block.first_weights(), target, ref,
        block=block_index, positions=torch.arange(first, first + x.shape[1])[None, :],
    )


@grad_only_if_inputs_ask
def stack_updates(stack: Stack, x: torch.Tensor, *, reference: str = "token",
                  every_position: bool = False) -> list[ImplicitUpdate]:
    """One update per block of ``stack`` for the sequence ``x`` ``(B, T, d)`` (docs/theory.md §4).

    Block ``l`` reads its with-context input ``X^l``; its target is the last position (every
    position with ``every_position=True``, leading dims ``(B, T)``) and its reference that
    position's representation ``X^l_t`` alone (``reference="token"``) or the last one's
    (``"query"``). One forward pass through the stack, keeping each block's ``z`` and ``s`` on
    the way, plus one batched pass of length-1 sequences per block; kept factored: memory
    ``O(T (m + d))`` per block, never ``T`` dense ``m x d`` matrices.
    """
    _check_sequence(x, stack)
    updates = []
    for l, (block, x, target) in enumerate(zip(stack.blocks, *stack.decompositions(x))):
        check_finite(x, "block input", block=l)
        if every_position:
            updates.append(_position_updates(block, x, target, reference, l))
        else:
            # at the last position both references are the last token alone
            last = Decomposition(target.z[:, -1:], None if target.s is None else target.s[:, -1:])
            updates.append(_position_updates(block, x[:, -1:], last, "token", l, x.shape[1] - 1)[:, -1])
    return updates


def run_updated(block: ContextualBlock, query: torch.Tensor, update: ImplicitUpdate, *,
                dense: bool = True) -> torch.Tensor:
    """``block_{W+dW, s+ds}(query)``: the query ``(B, d)`` alone through the updated block."""
    check_tensor(query, "query", ndim=2, dtype=module_dtype(block))
    return apply_update(block, update, single_token(block, query), dense=dense)


def run_stack_updated(stack: Stack, query: torch.Tensor, updates: Sequence[ImplicitUpdate], *,
                      dense: bool = True) -> torch.Tensor:
    """The query ``(B, d)`` alone through every block of ``stack``, each with its update
    (from :func:`stack_updates`); equals the stack's with-context output at the query."""
    if len(updates) != len(stack):
        raise ShapeError(f"{len(updates)} updates for a stack of {len(stack)} blocks")
    h = query
    for l, (block, upd) in enumerate(zip(stack.blocks, updates)):
        check_tensor(h, "query representation", ndim=2, dtype=module_dtype(block), block=l)
        h = apply_update(block, upd, single_token(block, h), dense=dense)
    return h
