"""The layer registry: one frozen record per contextual layer type.

A layer factory is a plain function ``factory(d, *, heads) -> torch.nn.Module`` whose module maps
``(batch, T, d) -> (batch, T, d)`` causally. ``register_layer`` records it with what a generator
needs to build random instances and what the property suite needs to know about it::

    @register_layer("my_rnn", heads=(1,), vanishing_increments=False)
    def my_rnn(d, *, heads):
        return MyRNN(d)

Layers registered by an installed package are found through the entry-point group
``icl_verify.layers`` (each entry point names a module to import, whose import registers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ShapeError
from ..registry import Registry
from ..seeding import seeded

LayerFactory = Callable[..., nn.Module]

BUILTIN_ORIGIN = "icl_verify."
"""Prefix of the :attr:`LayerInfo.origin` of every layer this package defines."""


@dataclass(frozen=True)
class LayerInfo:
    """What the suite knows about one registered layer type.

    Attributes:
        name: registry key.
        factory: ``factory(d, *, heads) -> nn.Module`` mapping ``(B, T, d) -> (B, T, d)``.
        heads: head counts a generator may draw (``(1,)`` for layers without heads).
        dim_multiple: ``d`` must be a multiple of ``dim_multiple * heads``.
        dims: inclusive range of widths ``d`` a generator may draw.
        vanishing_increments: ``True`` when ``||W_{i+1}-W_i|| = O(1/i)`` is proven (softmax
            attention, docs/theory.md §3; the suite checks the bound); ``False`` when the layer has no
            such guarantee (the suite must find an instance whose increments grow); ``None``
            when it is unknown (neither is asserted).
        tags: free labels (``"attention"``, ``"recurrent"``, ``"user"``, ...).
        dtypes: the parameter dtypes the module supports, or ``None`` for every dtype the
            strategies draw (:data:`icl_verify.strategies.DTYPES`); generators draw only these.
        origin: the module that defined the factory (``factory.__module__``); the layers of
            this package have origins under ``icl_verify.`` (:attr:`builtin`).
    """

    name: str
    factory: LayerFactory
    heads: tuple[int, ...] = (1,)
    dim_multiple: int = 1
    dims: tuple[int, int] = (2, 32)
    vanishing_increments: bool | None = False
    tags: tuple[str, ...] = ()
    dtypes: tuple[torch.dtype, ...] | None = None
    origin: str = ""

    @property
    def builtin(self) -> bool:
        """Whether this package defines the layer (its own tests check exactly these)."""
        return self.origin.startswith(BUILTIN_ORIGIN)

    def valid_dims(self, heads: int) -> list[int]:
        """Every width in ``dims`` allowed with ``heads`` heads."""
        step = self.dim_multiple * heads
        lo, hi = self.dims
        return [d for d in range(lo, hi + 1) if d % step == 0]

    def build(
        self,
        d: int,
        *,
        heads: int | None = None,
        seed: int = 0,
        scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> nn.Module:
        """A seeded instance: torch's default initialisation under ``seed``, weight matrices
        multiplied by ``scale``, cast to ``dtype``."""
        heads = self.heads[0] if heads is None else heads
        if heads not in self.heads:
            raise ShapeError(f"layer {self.name!r} takes heads in {self.heads}, got {heads}")
        if d % (self.dim_multiple * heads):
            raise ShapeError(
                f"layer {self.name!r} needs d divisible by {self.dim_multiple * heads}, got d={d}"
            )
        with seeded(seed):
            module = self.factory(d, heads=heads)
        with torch.no_grad():
            for p in module.parameters():
                if p.ndim >= 2:
                    p.mul_(scale)
        return module.to(dtype)


LAYERS: Registry[LayerInfo] = Registry("layer", entry_point_group="icl_verify.layers")


def register_layer(
    name: str,
    factory: LayerFactory | None = None,
    *,
    heads: tuple[int, ...] = (1,),
    dim_multiple: int = 1,
    dims: tuple[int, int] = (2, 32),
    vanishing_increments: bool | None = False,
    tags: tuple[str, ...] = (),
    dtypes: tuple[torch.dtype, ...] | None = None,
    replace: bool = False,
):
    """Register a layer factory under ``name``; usable as a decorator or a plain call.

    Raises :class:`~icl_verify.errors.DuplicateNameError` if ``name`` is taken (unless
    ``replace=True``).
    Returns the factory unchanged, so the decorated function stays usable.
    """

    def add(fn: LayerFactory) -> LayerFactory:
        LAYERS.add(name, LayerInfo(
            name=name,
            factory=fn,
            heads=tuple(heads),
            dim_multiple=dim_multiple,
            dims=tuple(dims),
            vanishing_increments=vanishing_increments,
            tags=tuple(tags),
            dtypes=None if dtypes is None else tuple(dtypes),
            origin=getattr(fn, "__module__", None) or "",
        ), replace=replace)
        return fn

    return add if factory is None else add(factory)


def unregister_layer(name: str) -> None:
    """Remove ``name`` from the registry (for tests and plugins)."""
    LAYERS.remove(name)


def get_layer(name: str) -> LayerInfo:
    """The record registered under ``name``; :class:`~icl_verify.errors.UnknownNameError` if
    there is none."""
    return LAYERS.get(name)


def list_layers(pattern: str = "*", *, builtin: bool | None = None) -> list[str]:
    """Registered names matching a shell-style wildcard ``pattern``, sorted; with ``builtin``
    only the layers this package defines (``True``) or only the others (``False``)."""
    return LAYERS.names(pattern, None if builtin is None else (lambda r: r.builtin == builtin))


def build_layer(name: str, d: int, **kwargs) -> nn.Module:
    """Shortcut for ``get_layer(name).build(d, **kwargs)``."""
    return get_layer(name).build(d, **kwargs)
