"""The architecture registry: tiny random configurations of real ``transformers`` blocks.

``register_architecture(name, factory, tags=...)`` records ``factory(*, seed, dtype)``, which
returns the :class:`AdaptedLM` of a tiny random model (width 16-64, 2 layers) built offline
from a config object, or a bare :class:`~icl_verify.blocks.Stack` of blocks. The property suite
iterates over :func:`list_architectures`, which is empty when ``transformers`` is not installed.

Whole causal language models are adapted by model type: ``register_model_adapter(model_type,
fn)`` records ``fn(model) -> AdaptedLM`` (see :func:`adapt_causal_lm`). Every adapted model
passes the reconstruction gate (:mod:`.gate`) before anything is checked on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..blocks import Stack
from ..registry import Registry
from ._common import INSTALL_HINT, transformers_available
from .gate import check_reconstruction

StackFactory = Callable[..., Stack]


@dataclass(frozen=True)
class ArchitectureInfo:
    """One registered architecture.

    Attributes:
        name: registry key.
        factory: ``factory(*, seed, dtype)`` -> :class:`AdaptedLM` of a tiny random model (or a
            bare ``Stack`` of blocks).
        width: model width ``d`` of the stack's input and output ``(B, T, d)``.
        tags: free labels (``"attention"``, ``"recurrent"``, ``"parallel"``, ``"post_ln"``, ...).
    """

    name: str
    factory: StackFactory
    width: int
    tags: tuple[str, ...] = ()

    def build(self, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Stack:
        """A seeded tiny stack in ``dtype``: the adapter stack of the factory's model, once it
        passes the reconstruction gate (:func:`~icl_verify.adapters.gate.check_reconstruction`).
        :class:`ImportError` without ``transformers``."""
        if not transformers_available():
            raise ImportError(f"architecture {self.name!r} needs the 'transformers' package; {INSTALL_HINT}")
        built = self.factory(seed=seed, dtype=dtype)
        if isinstance(built, AdaptedLM):
            check_reconstruction(built)
            return built.stack
        return built


ARCHITECTURES: Registry[ArchitectureInfo] = Registry("architecture")


def register_architecture(name: str, factory: StackFactory | None = None, *, width: int = 32,
                          tags: tuple[str, ...] = (), replace: bool = False):
    """Register ``factory(*, seed, dtype) -> AdaptedLM | Stack`` (inputs ``(B, T, width)``) under ``name``
    (a plain call or a decorator). :class:`~icl_verify.errors.DuplicateNameError` if ``name`` is
    taken and not ``replace``."""

    def add(fn: StackFactory) -> StackFactory:
        ARCHITECTURES.add(name, ArchitectureInfo(name, fn, width, tuple(tags)), replace=replace)
        return fn

    return add if factory is None else add(factory)


def list_architectures(pattern: str = "*", *, tag: str | None = None) -> list[str]:
    """Registered architecture names matching the wildcard ``pattern`` (and ``tag``), sorted.
    Empty when ``transformers`` is not installed, so suites iterating over it skip cleanly."""
    if not transformers_available():
        return []
    return ARCHITECTURES.names(pattern, None if tag is None else lambda info: tag in info.tags)


def get_architecture(name: str) -> ArchitectureInfo:
    """The record of ``name``; :class:`~icl_verify.errors.UnknownNameError` listing the
    registered names otherwise."""
    return ARCHITECTURES.get(name)


@dataclass
class AdaptedLM:
    """A causal language model seen as ``embed -> stack -> head``.

    Attributes:
        model: the unmodified ``transformers`` model.
        stack: adapter blocks, one per decoder layer, ``(B, T, d) -> (B, T, d)``.
        embed: ``embed(ids (B, T)) -> (B, T, d)``, the input of the first block (positions that are
            added to embeddings, as in GPT-2, are included); ids on any device.
        head: ``head(h (..., d)) -> logits (..., V)``: final norm, output matrix, soft-capping.
    """

    model: nn.Module
    stack: Stack
    embed: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]

    def __post_init__(self):
        """``embed`` takes ids on any device: they are moved to the input embedding's device."""
        embed, table = self.embed, self.model.get_input_embeddings()
        self.embed = lambda ids: embed(ids.to(table.weight.device))


MODEL_ADAPTERS: Registry[Callable[[nn.Module], AdaptedLM]] = Registry("model type")


def register_model_adapter(model_type: str, fn: Callable[[nn.Module], AdaptedLM] | None = None, *,
                           replace: bool = False):
    """Register ``fn(model) -> AdaptedLM`` for ``config.model_type == model_type``."""

    def add(f):
        MODEL_ADAPTERS.add(model_type, f, replace=replace)
        return f

    return add if fn is None else add(fn)
