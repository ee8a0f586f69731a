"""Contextual blocks: a contextual layer, a composition and a network (docs/theory.md §1).

Every block exposes, per position, the network input ``z`` and the bypass ``s`` (added after the
network), and its first dense matrices ``W_k``; the update code reads nothing else::

    composition     contextual a   network input z   bypass s   output
    none            A(X)           a                 none       f(Wz+b)
    residual        A(X)           x + a             x + a      s + f(Wz+b)
    pre_ln/pre_rms  A(N1(X))       N2(x + a)         x + a      s + f(Wz+b)
    post_ln         A(X)           N1(x + a)         z          N2(s + f(Wz+b))
    gated           as pre_rms, with a SwiGLU network (two first matrices: gate and up)
    parallel        A(N1(X))       N1(x)             x + a      s + f(Wz+b)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import get_layer
from .seeding import seeded
from .networks import MLP, GatedMLP
from .registry import Registry


@dataclass(frozen=True)
class Decomposition:
    """Per-position network input and bypass of a block.

    Attributes:
        z: network input, ``(B, T, d_z)``.
        s: bypass added after the network, ``(B, T, d_out)``, or ``None`` when the block has none.
    """

    z: torch.Tensor
    s: torch.Tensor | None

    def at(self, t: int | slice) -> "Decomposition":
        """The positions ``t`` (an index keeps no time axis: ``(B, d)``)."""
        return Decomposition(self.z[:, t], None if self.s is None else self.s[:, t])


class ContextualBlock(nn.Module):
    """What every block, ours or an adapter of a real architecture, provides.

    Subclasses implement :meth:`decompose`, :meth:`first_layers` and :meth:`output`; the
    forward pass is then ``output([W_k z + b_k for k], s)``.
    """

    def decompose(self, x: torch.Tensor) -> Decomposition:
        """Network input ``z`` and bypass ``s`` at every position of ``x`` ``(B, T, d)``."""
        raise NotImplementedError

    def first_layers(self) -> tuple[tuple[torch.Tensor, torch.Tensor | None], ...]:
        """The first dense matrices ``W_k`` ``(m_k, d_z)`` reading ``z``, with biases ``(m_k,)``."""
        raise NotImplementedError

    def output(self, hs: Sequence[torch.Tensor], s: torch.Tensor | None) -> torch.Tensor:
        """Block output from the first pre-activations ``hs[k] = W_k z + b_k`` and the bypass."""
        raise NotImplementedError

    def kinks(self, hs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Where the map is not smooth, for the pre-activations ``hs[k]`` whose nearest such point
        is not 0: ``{k: distance}``, ``distance`` shaped like ``hs[k]``, each component's distance to
        the nearest point where :meth:`output` jumps or has a kink. Every other pre-activation has
        its kinks at 0 (an activation's), distance ``|h|``. The error model's secant flags and
        moves the components that their rounding may carry across (:func:`icl_verify.error_model.identity.identity_bound`)."""
        return {}

    def first_weights(self) -> tuple[torch.Tensor, ...]:
        """The first dense matrices ``W_k`` ``(m_k, d_z)`` alone (what the updates change)."""
        return tuple(w for w, _ in self.first_layers())

    def pre_activations(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``[W_k z + b_k for each first matrix]``."""
        return [F.linear(z, w, b) for w, b in self.first_layers()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.decompose(x)
        return self.output(self.pre_activations(dec.z), dec.s)


@dataclass(frozen=True)
class Composition:
    """How a block wires its layer, norms and network (see the module table)."""

    name: str
    wiring: str  # "none" | "residual" | "pre" | "post" | "parallel"
    norm: str | None = None  # "layer" | "rms" | None
    gated: bool = False


COMPOSITIONS: Registry[Composition] = Registry("composition")


def register_composition(composition: Composition, *, replace: bool = False) -> Composition:
    """Make ``composition`` available to :func:`build_block` under ``composition.name``."""
    return COMPOSITIONS.add(composition.name, composition, replace=replace)


for _c in (
    Composition("none", "none"),
    Composition("residual", "residual"),
    Composition("pre_ln", "pre", "layer"),
    Composition("pre_rms", "pre", "rms"),
    Composition("post_ln", "post", "layer"),
    Composition("gated", "pre", "rms", gated=True),
    Composition("parallel", "parallel", "layer"),
):
    register_composition(_c)


def list_compositions(pattern: str = "*") -> list[str]:
    """Names of the registered block compositions matching ``pattern``."""
    return COMPOSITIONS.names(pattern)


def get_composition(name: str) -> Composition:
    """The composition ``name``; :class:`~icl_verify.errors.UnknownNameError` if unknown."""
    return COMPOSITIONS.get(name)


def _norm(kind: str | None, d: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    norm = nn.LayerNorm(d) if kind == "layer" else nn.RMSNorm(d, eps=1e-6)
    with torch.no_grad():  # non-trivial affine parameters, so a missing norm is visible
        norm.weight.copy_(1 + 0.2 * torch.randn(d))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(0.1 * torch.randn(d))
    return norm


class Block(ContextualBlock):
    """A contextual layer ``A`` followed by a network, wired by a :class:`Composition`.

    Maps ``(B, T, d) -> (B, T, d)``.
    """

    def __init__(self, layer: nn.Module, network: nn.Module, composition: Composition, d: int):
        super().__init__()
        self.layer, self.network, self.composition = layer, network, composition
        wiring = composition.wiring
        self.norm1 = _norm(composition.norm, d) if wiring in ("pre", "post", "parallel") else nn.Identity()
        self.norm2 = _norm(composition.norm, d) if wiring in ("pre", "post") else nn.Identity()

    def decompose(self, x: torch.Tensor) -> Decomposition:
        wiring = self.composition.wiring
        if wiring == "none":
            a = self.layer(x)
            return Decomposition(a, None)
        if wiring == "residual":
            s = x + self.layer(x)
            return Decomposition(s, s)
        if wiring == "pre":
            s = x + self.layer(self.norm1(x))
            return Decomposition(self.norm2(s), s)
        if wiring == "post":
            z = self.norm1(x + self.layer(x))
            return Decomposition(z, z)
        n = self.norm1(x)  # parallel
        return Decomposition(n, x + self.layer(n))

    def first_layers(self):
        return tuple((lin.weight, lin.bias) for lin in self.network.first)

    def output(self, hs, s):
        f = self.network.rest(hs)
        if s is None:
            return f
        return self.norm2(s + f) if self.composition.wiring == "post" else s + f

    def extra_repr(self) -> str:
        return f"composition={self.composition.name}"


class Stack(nn.Module):
    """``L`` blocks applied in order: ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, blocks: Sequence[ContextualBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def block_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[X^0, X^1, ..., X^L]``: the input of every block, then the stack's output."""
        xs = [x]
        for block in self.blocks:
            xs.append(block(xs[-1]))
        return xs

    def decompositions(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[Decomposition]]:
        """One forward pass keeping every block's input ``X^l`` ``(B, T, d)`` and decomposition
        (leading dims ``(B, T)``); block ``l``'s output is computed from its decomposition."""
        xs, decs = [], []
        for block in self.blocks:
            dec = block.decompose(x)
            xs.append(x)
            decs.append(dec)
            x = block.output(block.pre_activations(dec.z), dec.s)
        return xs, decs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def __len__(self) -> int:
        return len(self.blocks)


def build_block(
    layer: str,
    composition: str,
    d: int,
    *,
    heads: int | None = None,
    hidden: int | None = None,
    act: str = "relu",
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Block:
    """A seeded random block: registered ``layer`` in ``composition``, width ``d``.

    The network is a one-hidden-layer MLP (``act``) of width ``hidden`` (default ``2d``), or a
    SwiGLU network for the ``gated`` composition.
    """
    comp = get_composition(composition)
    module = get_layer(layer).build(d, heads=heads, seed=seed, scale=scale, dtype=dtype)
    hidden = 2 * d if hidden is None else hidden
    with seeded(seed + 1_000_003):
        network = GatedMLP(d, hidden) if comp.gated else MLP(d, hidden, act=act)
        block = Block(module, network, comp, d)
    return block.to(dtype)


def build_stack(layer: str, composition: str, d: int, depth: int, *, seed: int = 0, **kwargs) -> Stack:
    """``depth`` seeded random blocks of the same kind (block ``l`` uses seed ``seed + 7l``)."""
    return Stack([build_block(layer, composition, d, seed=seed + 7 * i, **kwargs) for i in range(depth)])
