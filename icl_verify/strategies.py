"""Hypothesis strategies for blocks, stacks, contexts and parts of contexts.

Every strategy draws a small frozen *description* (sizes, scales, seeds, dtype), never a tensor;
``.build()`` / ``.tensors()`` then make the tensors deterministically from the drawn seed with a
seeded ``torch.Generator`` (or :func:`icl_verify.seeding.seeded`). A failing example therefore
prints as a short, copy-pasteable line such as
``BlockSpec(layer='gru', composition='post_ln', d=3, heads=1, hidden=4, ...)``, and shrinking
moves towards small widths, short contexts and seed 0.

Each keyword argument takes a value or a strategy (as in ``hypothesis.extra.numpy``); ``None``
means "any". Layer names are checked eagerly (:class:`~icl_verify.errors.UnknownLayerError`)::

    from hypothesis import given
    from icl_verify import claims
    from icl_verify.strategies import cases

    @given(cases("gru", composition="pre_ln", max_len=5))
    def test_my_claim(case):
        block, context, query = case.build()
        assert claims.theorem(block, context, query).passed
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .blocks import Block, Stack, build_block, build_stack, get_composition, list_compositions
from .layers import get_layer, list_layers

DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
"""Dtypes drawn by default, in shrinking order: float64 first, then float32, bfloat16, float16
(the error model accumulates bfloat16/float16 products in float32, as PyTorch does)."""

SCALES: tuple[float, ...] = (1e-3, 0.1, 1.0, 3.0, 10.0)
"""Initialisation scales drawn by default (weight matrices multiplied by the scale): tiny to large."""

NORMS: tuple[float, ...] = (1e-3, 1.0, 10.0)
"""Typical token norms drawn by default: tiny, unit, large."""

KINDS: tuple[str, ...] = ("iid", "repeated", "near_duplicate", "query_copies")
"""How context tokens relate to each other and to the query (see :class:`ContextSpec`)."""

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "tanh")
"""Activations of the (non-gated) MLP drawn by default."""

MAX_D = 12
"""Largest width drawn by default (the registry may allow more; small is fast and shrinks well)."""


def _strategy(value: Any, default: SearchStrategy) -> SearchStrategy:
    """``value`` as a strategy: itself if it is one, ``default`` if ``None``, else ``just``."""
    if value is None:
        return default
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _check_layer(layer: Any) -> None:
    if isinstance(layer, str):
        get_layer(layer)  # UnknownLayerError, with the registered names, if it is not there


def _check_composition(composition: Any) -> None:
    if isinstance(composition, str):
        get_composition(composition)


@dataclass(frozen=True)
class BlockSpec:
    """A seeded random block (:func:`icl_verify.blocks.build_block`), described by its sizes.

    Attributes:
        layer: registered layer name.
        composition: block composition (``none``, ``residual``, ``pre_ln``, ...).
        d: model width.
        heads: head count (one of the layer's ``heads``).
        hidden: network width (``m`` of the first matrices ``W_k`` ``(m, d)``).
        act: MLP activation (ignored by the ``gated`` composition, which uses SiLU).
        scale: multiplier of every weight matrix of the layer.
        seed: seed of the initialisation.
        dtype: parameter dtype.
    """

    layer: str
    composition: str
    d: int
    heads: int
    hidden: int
    act: str
    scale: float
    seed: int
    dtype: torch.dtype

    def build(self) -> Block:
        """The block, in eval mode, mapping ``(B, T, d) -> (B, T, d)``."""
        return build_block(self.layer, self.composition, self.d, heads=self.heads,
                           hidden=self.hidden, act=self.act, seed=self.seed, scale=self.scale,
                           dtype=self.dtype).eval()


@dataclass(frozen=True)
class StackSpec:
    """``depth`` blocks like ``block`` (block ``l`` seeded ``block.seed + 7 l``)."""

    block: BlockSpec
    depth: int

    def build(self) -> Stack:
        """The stack, in eval mode, mapping ``(B, T, d) -> (B, T, d)``."""
        b = self.block
        return build_stack(b.layer, b.composition, b.d, self.depth, seed=b.seed, heads=b.heads,
                           hidden=b.hidden, act=b.act, scale=b.scale, dtype=b.dtype).eval()


@dataclass(frozen=True)
class ContextSpec:
    """A batch of contexts ``(B, n, d)`` and queries ``(B, d)``, built by :meth:`tensors`.

    Attributes:
        n: context length (may be 0).
        batch: ``B``.
        kind: ``"iid"`` (independent Gaussian tokens), ``"repeated"`` (tokens drawn from a pool
            of ``max(1, n // 3)`` distinct tokens, so exact repeats), ``"near_duplicate"`` (every
            token a perturbation of one token, relative size ``jitter``), ``"query_copies"``
            (every other token is the query itself, the rest near copies of it).
        norm: typical token norm.
        spread: token norms vary log-uniformly in ``[norm / spread, norm * spread]``.
        jitter: relative size of the perturbations of near duplicates.
        seed: seed of the generator.
    """

    n: int
    batch: int
    kind: str
    norm: float
    spread: float
    jitter: float
    seed: int

    def tensors(self, d: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context (B, n, d), query (B, d))`` in ``dtype`` (drawn in float64, then cast)."""
        g = torch.Generator().manual_seed(self.seed)

        def gauss(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, d, generator=g, dtype=torch.float64) / d ** 0.5

        b, n = self.batch, self.n

        def scaled(tokens: torch.Tensor) -> torch.Tensor:  # norms log-uniform around self.norm
            logs = 2 * torch.rand(*tokens.shape[:-1], 1, generator=g, dtype=torch.float64) - 1
            return tokens * self.norm * self.spread ** logs

        query = scaled(gauss(b))
        if self.kind == "iid":
            context = scaled(gauss(b, n))
        elif self.kind == "repeated":
            pool = torch.cat([scaled(gauss(b, max(1, n // 3))), query[:, None]], dim=1)
            context = pool[:, torch.randint(pool.shape[1], (n,), generator=g)]
        elif self.kind == "near_duplicate":
            base = scaled(gauss(b, 1))
            context = base + self.jitter * base.norm(dim=-1, keepdim=True) * gauss(b, n) * d ** 0.5
        elif self.kind == "query_copies":
            context = query[:, None] + self.jitter * query.norm(dim=-1)[:, None, None] * gauss(b, n) * d ** 0.5
            context[:, ::2] = query[:, None]
        else:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        return context.to(dtype), query.to(dtype)


@dataclass(frozen=True)
class Case:
    """One instance of a claim: a block and the context/query it reads."""

    block: BlockSpec
    context: ContextSpec

    def build(self) -> tuple[Block, torch.Tensor, torch.Tensor]:
        """``(block, context (B, n, d), query (B, d))``."""
        block = self.block.build()
        context, query = self.context.tensors(self.block.d, self.block.dtype)
        return block, context, query

    def sequence(self) -> tuple[Block, torch.Tensor]:
        """``(block, x (B, n + 1, d))``: the context followed by the query."""
        block, context, query = self.build()
        return block, torch.cat([context, query[:, None]], dim=1)


@dataclass(frozen=True)
class StackCase:
    """One instance of the stack claim: a stack and the sequence it reads."""

    stack: StackSpec
    context: ContextSpec

    def build(self) -> tuple[Stack, torch.Tensor]:
        """``(stack, x (B, n + 1, d))``: the context followed by the query."""
        b = self.stack.block
        context, query = self.context.tensors(b.d, b.dtype)
        return self.stack.build(), torch.cat([context, query[:, None]], dim=1)


def layer_names() -> SearchStrategy[str]:
    """Any registered layer name (the registry as it is when the strategy is first drawn from)."""
    return st.deferred(lambda: st.sampled_from(list_layers()))


def compositions() -> SearchStrategy[str]:
    """Any block composition name."""
    return st.sampled_from(list_compositions())


def dtypes(allowed: Any = None) -> SearchStrategy[torch.dtype]:
    """Any of :data:`DTYPES` (float64 first, so shrinking prefers it); with ``allowed`` (a
    sequence of dtypes, or a layer name whose registered ``dtypes`` restrict it) only those."""
    if isinstance(allowed, str):
        allowed = get_layer(allowed).dtypes
    return st.sampled_from([t for t in DTYPES if allowed is None or t in allowed])


def scales() -> SearchStrategy[float]:
    """Initialisation scales: 1 first, then tiny (1e-3) to large (10)."""
    return st.sampled_from((1.0,) + tuple(s for s in SCALES if s != 1.0))


@st.composite
def blocks(draw, layer: Any = None, *, composition: Any = None, dtype: Any = None,
           scale: Any = None, max_d: int = MAX_D, seed: Any = None) -> BlockSpec:
    """A :class:`BlockSpec`: the layer's heads, a width ``d`` valid for them (at most ``max_d``
    when the layer allows one), a network width in ``[max(2, d // 2), 2 d]``, an activation,
    an initialisation scale, a seed and a dtype (one of the layer's ``dtypes`` when it
    registered some; a drawn ``dtype`` outside them is rejected)."""
    name = draw(_strategy(layer, layer_names()))
    info = get_layer(name)
    heads = draw(st.sampled_from(info.heads))
    valid = info.valid_dims(heads)
    if not valid:
        raise ValueError(f"layer {name!r} has no valid width with heads={heads} in {info.dims}")
    small = [d for d in valid if d <= max_d] or valid[:1]
    d = draw(st.sampled_from(small))
    return BlockSpec(
        layer=name,
        composition=draw(_strategy(composition, compositions())),
        d=d,
        heads=heads,
        hidden=draw(st.integers(max(2, d // 2), 2 * d)),
        act=draw(st.sampled_from(ACTIVATIONS)),
        scale=draw(_strategy(scale, scales())),
        seed=draw(_strategy(seed, st.integers(0, 2**16))),
        dtype=draw(_strategy(dtype, dtypes(info.dtypes)).filter(
            lambda t: info.dtypes is None or t in info.dtypes)),
    )


def stacks(layer: Any = None, *, composition: Any = None, depth: Any = None, dtype: Any = None,
           scale: Any = None, max_d: int = MAX_D) -> SearchStrategy[StackSpec]:
    """A :class:`StackSpec` of ``depth`` (default 1 to 3) blocks."""
    _check_layer(layer)
    _check_composition(composition)
    return st.builds(StackSpec,
                     blocks(layer, composition=composition, dtype=dtype, scale=scale, max_d=max_d),
                     _strategy(depth, st.integers(1, 3)))


def contexts(*, min_len: int = 0, max_len: int = 8, batch: Any = None, kind: Any = None,
             norm: Any = None, spread: Any = None) -> SearchStrategy[ContextSpec]:
    """A :class:`ContextSpec` of length ``min_len..max_len`` (batch 1 or 2 by default), any kind,
    token norms from :data:`NORMS`, norm spreads 1 (all alike) to 100, jitter 1e-8 to 1e-2."""
    if not 0 <= min_len <= max_len:
        raise ValueError(f"need 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    return st.builds(
        ContextSpec,
        n=st.integers(min_len, max_len),
        batch=_strategy(batch, st.integers(1, 2)),
        kind=_strategy(kind, st.sampled_from(KINDS)),
        norm=_strategy(norm, st.sampled_from((1.0,) + tuple(x for x in NORMS if x != 1.0))),
        spread=_strategy(spread, st.sampled_from((1.0, 3.0, 100.0))),
        jitter=st.sampled_from((1e-2, 1e-5, 1e-8)),
        seed=st.integers(0, 2**16),
    )


def cases(layer: Any = None, *, composition: Any = None, dtype: Any = None, scale: Any = None,
          min_len: int = 0, max_len: int = 8, batch: Any = None, kind: Any = None,
          norm: Any = None, max_d: int = MAX_D) -> SearchStrategy[Case]:
    """A :class:`Case`: a block (:func:`blocks`) and a context with a query (:func:`contexts`)."""
    _check_layer(layer)
    _check_composition(composition)
    return st.builds(Case,
                     blocks(layer, composition=composition, dtype=dtype, scale=scale, max_d=max_d),
                     contexts(min_len=min_len, max_len=max_len, batch=batch, kind=kind, norm=norm))


def stack_cases(layer: Any = None, *, composition: Any = None, depth: Any = None,
                dtype: Any = None, scale: Any = None, min_len: int = 0, max_len: int = 6,
                norm: Any = None, max_d: int = MAX_D) -> SearchStrategy[StackCase]:
    """A :class:`StackCase`: a stack (:func:`stacks`) and a sequence of ``min_len + 1..max_len + 1``
    tokens."""
    return st.builds(StackCase,
                     stacks(layer, composition=composition, depth=depth, dtype=dtype, scale=scale,
                            max_d=max_d),
                     contexts(min_len=min_len, max_len=max_len, norm=norm))


def subsets(n: int) -> SearchStrategy[torch.Tensor]:
    """A part ``Y`` of a context of length ``n``: a boolean mask ``(n,)`` (any, empty and full
    included)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return st.lists(st.booleans(), min_size=n, max_size=n).map(
        lambda bits: torch.tensor(bits, dtype=torch.bool).reshape(n))
