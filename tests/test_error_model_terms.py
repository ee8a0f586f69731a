"""Every term of the error model is shown necessary by a witness: a stored case whose exact update
passes with the whole model and fails once the term is dropped
(:func:`icl_verify.error_model.catalog.dropped`); a term without one is listed in
docs/error-model.md, "Derived but not yet shown necessary". ``python -m
benchmarks.error_model_witnesses`` searches the verdict corpus for such cases."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from icl_verify import claims
from icl_verify.blocks import ContextualBlock, Decomposition
from icl_verify.error_model import catalog
from icl_verify.updates import general_update


class LinearMap(ContextualBlock):
    """A block whose map is the identity on one first layer ``W z + b`` (plus the bypass): the
    identity then compares the two sides' pre-activations themselves."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None = None):
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)
        self.b = None if b is None else nn.Parameter(b, requires_grad=False)

    def first_layers(self):
        return ((self.w, self.b),)

    def output(self, hs, s):
        return hs[0] if s is None else s + hs[0]


def orthogonal_rows(dtype: torch.dtype, d: int, m: int = 4, batch: int = 4) -> claims.Check:
    """The identity of a :class:`LinearMap` whose rows are orthogonal (in float64) to every ``z_r``
    and ``z_t`` of width ``d``: each pre-activation is a sum of ``d`` terms of size ``|W_ij z_j|``
    that cancels to about one rounding, so only the partial-sum scale ``q`` describes its
    rounding."""
    g = torch.Generator().manual_seed(0)
    z_r = torch.randn(batch, d, generator=g, dtype=torch.float64)
    z_t = z_r + torch.randn(batch, d, generator=g, dtype=torch.float64)
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.cat([z_r, z_t]).T)
    block = LinearMap((w - (w @ basis) @ basis.T).to(dtype))
    upd = general_update(block.first_weights(), Decomposition(z_t.to(dtype), None),
                         Decomposition(z_r.to(dtype), None))
    return claims.identity(block, upd, dense=False)


def subnormal_update():
    """float16, first matrix scaled to 1e-3, tokens of norm 1e-2, the map the identity: every
    pre-activation lies among the subnormals and rounds absolutely. ``(block, update)``."""
    from icl_verify import build_block

    block = build_block("softmax_attention", "none", 8, heads=2, seed=0, dtype=torch.float16)
    block.output = lambda hs, s: hs[0]
    with torch.no_grad():
        for w, b in block.first_layers():
            w.mul_(1e-3)
            if b is not None:
                b.zero_()
    g = torch.Generator().manual_seed(0)
    context = (torch.randn(2, 3, 8, generator=g) * 1e-2).half()
    query = (torch.randn(2, 8, generator=g) * 1e-2).half()
    return block, claims.context_update(block, context, query)


def subnormal_pre_activations() -> claims.Check:
    """The identity on :func:`subnormal_update`, factored."""
    return claims.identity(*subnormal_update(), dense=False)


def non_uniqueness(case, t: float, seed: int) -> claims.Check:
    """The non-uniqueness property's check at ``case`` with a right factor of terms ``t`` times its
    value (properties/test_nonuniqueness.py)."""
    from properties.test_nonuniqueness import family_member

    block, context, query = case.build()
    upd = claims.context_update(block, context, query)
    other = dataclasses.replace(upd, right=family_member(upd.right, upd.reference.z, t, seed))
    return claims.identity(block, other, claim="non_uniqueness")


def large_bypass_shift() -> claims.Check:
    """float32 :class:`LinearMap` with a bypass: the lone token's bypass is ``1e4`` times the
    contextual one, so ``s_r + fl(s_t - s_r)`` rounds at ``1e4 u`` against outputs of size 1."""
    g = torch.Generator().manual_seed(0)
    d = batch = 8
    w, z_r, z_t = (torch.randn(*shape, generator=g) for shape in [(d, d), (batch, d), (batch, d)])
    s_r, s_t = 1e4 * torch.randn(batch, d, generator=g), torch.randn(batch, d, generator=g)
    block = LinearMap(w)
    upd = general_update(block.first_weights(), Decomposition(z_t, s_t), Decomposition(z_r, s_r))
    return claims.identity(block, upd, dense=False)


def _retention_subnormal():
    """A float16 retention block whose every output component is subnormal, with the
    non-uniqueness property's right factor of terms ``1e-3`` times its value."""
    from icl_verify.strategies import BlockSpec, Case, ContextSpec

    case = Case(BlockSpec("retention", "gated", d=12, heads=2, hidden=10, act="relu", scale=1.0, seed=0,
                          dtype=torch.float16),
                ContextSpec(n=1, batch=1, kind="iid", norm=1e-3, spread=100.0, jitter=0.01, seed=5569))
    return non_uniqueness(case, 1e-3, 0)


def _softmax_large_tokens():
    from properties.test_positions import SOFTMAX_LARGE_TOKENS
    return claims.positions(*SOFTMAX_LARGE_TOKENS.sequence(), "query")


def _gru_large_v():
    from properties.test_nonuniqueness import GRU_LARGE_V
    return non_uniqueness(GRU_LARGE_V, 1e3, 0)


def _layer_norm_mean():
    from properties.test_positions import GATED_DELTANET_POST_LN_MEAN
    block, x = GATED_DELTANET_POST_LN_MEAN.sequence()
    return claims.positions(block, x, "query")


def _mamba2_no_digit():
    from properties.test_theorem import MAMBA2_NO_DIGIT
    return claims.theorem(*MAMBA2_NO_DIGIT.build(), dense=False)


def _mamba_near_duplicates():
    from properties.test_stacks import MAMBA_NEAR_DUPLICATES
    return claims.stack(*MAMBA_NEAR_DUPLICATES.build())


def _subnormal_left():
    from properties.test_telescoping import SUBNORMAL_LEFT
    return claims.increments(*SUBNORMAL_LEFT.build())


WITNESSES = {
    "inner_products": lambda: orthogonal_rows(torch.float64, 4096),
    "operand_storage": lambda: orthogonal_rows(torch.bfloat16, 1024),
    "left_factor": _gru_large_v,
    "pre_activation_underflow": subnormal_pre_activations,
    "bypass": large_bypass_shift,
    "layer_norm_mean": _layer_norm_mean,
    "map_underflow": _retention_subnormal,
    "output": _softmax_large_tokens,
    "secant": _mamba2_no_digit,
    "decomposition": _mamba_near_duplicates,
    "matrix_underflow": _subnormal_left,
}
"""Term -> a stored case's exact check (docs/error-model.md, "Table of terms")."""


@pytest.mark.parametrize("term", list(WITNESSES))
def test_each_term_is_necessary(term):
    assert WITNESSES[term]().passed
    with catalog.dropped(term):
        without = WITNESSES[term]()
    assert not without.passed, f"{term}: the witness still passes without the term ({without})"


def unwitnessed_in_docs() -> set[str]:
    """The terms docs/error-model.md lists as derived but not yet shown necessary."""
    text = (Path(__file__).parents[1] / "docs" / "error-model.md").read_text()
    section = text.split("## Derived but not yet shown necessary", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\[(\w+)\]\(#", section)) & set(catalog.names())


def test_every_term_has_a_witness_or_is_listed_in_the_docs():
    listed = unwitnessed_in_docs()
    assert not listed & set(WITNESSES), "a term with a witness is still listed as not shown necessary"
    assert set(catalog.names()) == set(WITNESSES) | listed, \
        f"terms with neither a witness nor a docs entry: {set(catalog.names()) - set(WITNESSES) - listed}"


@pytest.mark.parametrize("name", [t.name for t in catalog.REFINEMENTS])
def test_each_refinement_lowers_a_tolerance(name):
    """The refinements cannot fail an exact update when dropped; their witness is a case whose
    tolerance they lower: gemma2 in float64, whose post-network RMSNorm computes in float32, so
    both sides' outputs are bitwise their bypass plus one network value (shared pre-activations at
    the first position, additive entries at every one): about ten times lower."""
    from icl_verify import sweep
    from icl_verify.adapters import get_architecture

    pytest.importorskip("transformers")
    info = get_architecture("gemma2")
    block = info.build(seed=0, dtype=torch.float64).blocks[0]
    context, query, _ = sweep._inputs(info.width, torch.float64, sweep.InstanceSizes(), 0)
    upd = claims.context_update(block, context, query)
    refined = claims.identity(block, upd)
    with catalog.dropped(name):
        plain = claims.identity(block, upd)
    assert refined.passed and plain.passed
    assert bool((plain.tolerance >= 5 * refined.tolerance).all()), (plain.tolerance / refined.tolerance).tolist()


def test_the_docs_table_lists_every_term_in_order_with_its_code():
    """docs/error-model.md's table of terms has one row per catalogued term, in the catalogue's
    order, naming the code that computes it; every named code exists."""
    import importlib

    text = (Path(__file__).parents[1] / "docs" / "error-model.md").read_text()
    rows = re.findall(r"^\| \[(\w+)\]\(#[\w-]+\) \| (.*?) \|", text, flags=re.M)
    assert [name for name, _ in rows] == catalog.names()
    for (name, code_cell), term in zip(rows, catalog.TERMS):
        short = term.code.removeprefix("icl_verify.error_model.")
        assert f"`{short}`" in code_cell, f"{name}: the table names {code_cell}, the code is {short}"
        module, attr = term.code.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), attr), term.code
