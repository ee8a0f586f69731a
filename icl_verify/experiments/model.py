"""The regression model: a :class:`~icl_verify.blocks.Stack` of core blocks, so every claim and
property of the package applies to it unchanged.

- First paper (Dherin et al.): one block, multi-head causal softmax attention followed by a ReLU
  MLP, no skip connection, no normalisation (composition ``"none"``).
- Second paper (Innocenti & Achour): ``depth`` residual blocks, pre-LayerNorm (``"pre_ln"``) or
  no norm (``"residual"``), a GELU MLP with two hidden layers of width ``4(d+1)``.

The prediction is the last coordinate of the last output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import Block, Stack, get_composition
from ..errors import ShapeError
from ..seeding import seeded
from ..layers.attention import SoftmaxAttention
from ..networks import MLP
from ..updates import context_update, run_stack_updated, run_updated, stack_updates

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ModelConfig:
    """What builds a model.

    Attributes:
        d: input dimension of the regression task (token width ``d + 1``).
        depth: number of blocks.
        composition: block composition (``"none"``, ``"residual"``, ``"pre_ln"``, ...).
        heads: attention heads; must divide ``d + 1`` (3 or 1 for ``d = 2``).
        hidden: MLP hidden width.
        mlp_depth: number of hidden layers of the MLP.
        act: MLP activation (``"relu"``, ``"gelu"``).
        dtype: ``"float64"`` or ``"float32"``.
        seed: initialisation seed.
    """

    d: int = 2
    depth: int = 1
    composition: str = "none"
    heads: int = 3
    hidden: int = 32
    mlp_depth: int = 1
    act: str = "relu"
    dtype: str = "float64"
    seed: int = 0

    @property
    def width(self) -> int:
        return self.d + 1

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def first_paper(d: int = 2, *, heads: int = 3, hidden: int = 32, seed: int = 0,
                dtype: str = "float64") -> ModelConfig:
    """One block: softmax attention + ReLU MLP, no skip, no norm."""
    return ModelConfig(d=d, depth=1, composition="none", heads=heads, hidden=hidden, mlp_depth=1,
                       act="relu", dtype=dtype, seed=seed)


def second_paper(d: int = 2, *, depth: int = 5, layer_norm: bool = True, heads: int = 3,
                 seed: int = 0, dtype: str = "float64") -> ModelConfig:
    """``depth`` residual blocks, pre-LN or no norm, GELU MLP with two hidden layers of ``4(d+1)``."""
    return ModelConfig(d=d, depth=depth, composition="pre_ln" if layer_norm else "residual",
                       heads=heads, hidden=4 * (d + 1), mlp_depth=2, act="gelu", dtype=dtype,
                       seed=seed)


def build_model(cfg: ModelConfig) -> Stack:
    """A seeded :class:`Stack` of ``cfg.depth`` blocks mapping ``(B, T, d+1) -> (B, T, d+1)``.

    Raises :class:`ShapeError` when ``heads`` does not divide ``d + 1``.
    """
    width = cfg.width
    if width % cfg.heads:
        raise ShapeError(f"heads={cfg.heads} must divide the token width d+1={width}")
    comp = get_composition(cfg.composition)
    blocks = []
    with seeded(cfg.seed):
        for _ in range(cfg.depth):
            attention = SoftmaxAttention(width, cfg.heads)
            network = MLP(width, cfg.hidden, depth=cfg.mlp_depth, act=cfg.act)
            blocks.append(Block(attention, network, comp, width))
    return Stack(blocks).to(cfg.torch_dtype)


def predict(model: Stack, tokens: torch.Tensor) -> torch.Tensor:
    """In-context prediction: last coordinate of the output at the last position, ``(B,)``."""
    return model(tokens)[:, -1, -1]


def implicit_predict(model: Stack, context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The query alone through the model with every block's implicit update ``W + dW(C)``
    (and bypass shift), ``(B,)``. One block: :func:`context_update` + :func:`run_updated`;
    a stack: :func:`stack_updates` + :func:`run_stack_updated`."""
    if len(model) == 1:
        block = model.blocks[0]
        return run_updated(block, query, context_update(block, context, query))[:, -1]
    updates = stack_updates(model, torch.cat([context, query[:, None]], dim=1))
    return run_stack_updated(model, query, updates)[:, -1]


def first_weights(model: Stack) -> list[torch.Tensor]:
    """The first dense matrix ``W^l`` ``(m, d+1)`` of every block's MLP (what the updates change)."""
    return [block.first_weights()[0] for block in model.blocks]


def forward_with_weights(model: Stack, tokens: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """The model on ``tokens`` ``(B, T, d+1)`` with block ``l``'s first MLP matrix replaced by a
    per-prompt ``weights[l]`` ``(B, m, d+1)``; returns ``(B, T, d+1)``. Differentiable in ``weights``."""
    h = tokens
    for block, w in zip(model.blocks, weights):
        dec = block.decompose(h)
        b = block.network.first[0].bias
        pre = torch.einsum("bmd,btd->btm", w, dec.z)
        h = block.output([pre if b is None else pre + b], dec.s)
    return h
