"""The catalogue of the error model's terms: one :class:`Term` per section of docs/error-model.md, in
the same order, with the code that computes it and a way to drop it (:func:`dropped`), so that a
test can show each term necessary: a stored case whose exact update fails without it."""
from __future__ import annotations

from typing import Callable, ContextManager, NamedTuple
from unittest import mock

import torch

from . import identity, matrix, secant, stack, taps, terms


class Term(NamedTuple):
    """A term: its ``name`` (the docs section), the ``code`` that computes it (dotted path) and
    ``drop``, a context manager factory within which the model runs without it."""
    name: str
    code: str
    drop: Callable[[], ContextManager]


def _without_pre_activation(term) -> Callable[[], ContextManager]:
    kept = tuple(t for t in terms.PRE_ACTIVATION_TERMS if t is not term)
    return lambda: mock.patch.object(terms, "PRE_ACTIVATION_TERMS", kept)


def _zero_bypass(idn, s_t, s_r, s):
    zero = torch.zeros_like(s)
    return zero, zero


def _zero_output(idn, y, s, entry_dims):
    return torch.zeros(y.shape[:entry_dims], dtype=y.dtype, device=y.device)


def _zero_layer_norm(v, *args, **kwargs):
    return torch.zeros_like(v, dtype=torch.promote_types(v.dtype, torch.float32))


def _tangent_only(fn, sides, entry_dims, out_rounding):
    return [side.rounding for side in sides]


def _zero_decomposition(block, upd, h):
    return torch.zeros(h.shape[0], dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)


def _zero_matrix_underflow(left_sum, right_sum, products, ref_norm, dtype):
    return torch.zeros((), dtype=left_sum.dtype, device=left_sum.device)


def _patch(module, name, value) -> Callable[[], ContextManager]:
    return lambda: mock.patch.object(module, name, value)


_PRE = [Term(t.__name__, f"icl_verify.error_model.terms.{t.__name__}", _without_pre_activation(t))
        for t in terms.PRE_ACTIVATION_TERMS]

TERMS: tuple[Term, ...] = (*_PRE,
    Term("bypass", "icl_verify.error_model.terms.bypass", _patch(terms, "bypass", _zero_bypass)),
    Term("layer_norm_mean", "icl_verify.error_model.taps.layer_norm_mean_scale",
         _patch(taps, "layer_norm_mean_scale", _zero_layer_norm)),
    Term("map_underflow", "icl_verify.error_model.taps.MapTaps", _patch(taps, "underflow", lambda dtype: 0.0)),
    Term("output", "icl_verify.error_model.terms.output", _patch(terms, "output", _zero_output)),
    Term("secant", "icl_verify.error_model.secant.secant", _patch(secant, "secant", _tangent_only)),
    Term("decomposition", "icl_verify.error_model.stack.decomposition_variance",
         _patch(stack, "decomposition_variance", _zero_decomposition)),
    Term("matrix_underflow", "icl_verify.error_model.matrix.matrix_underflow",
         _patch(matrix, "matrix_underflow", _zero_matrix_underflow)),
)
"""Every term that adds to a tolerance, in the docs' order."""


def _no_shared_entries(hs, target_side, entry_dims):
    return None


def _no_additive_entries(block, hs, s, y, y_t, s_t, shared):
    return torch.zeros_like(shared)


REFINEMENTS: tuple[Term, ...] = (
    Term("shared_entries", "icl_verify.error_model.refinements.shared_entries",
         _patch(identity, "shared_entries", _no_shared_entries)),
    Term("additive_entries", "icl_verify.error_model.refinements.additive_entries",
         _patch(identity, "additive_entries", _no_additive_entries)),
)
"""The refinements that lower a tolerance (docs' order); dropping one never fails an exact update."""


def dropped(name: str) -> ContextManager:
    """A context within which the model runs without the term or refinement ``name``."""
    for term in TERMS + REFINEMENTS:
        if term.name == name:
            return term.drop()
    raise KeyError(f"no error-model term named {name!r}; terms: {', '.join(t.name for t in TERMS + REFINEMENTS)}")


def names() -> list[str]:
    """The terms' names, in order."""
    return [t.name for t in TERMS]

