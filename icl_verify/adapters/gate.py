"""The reconstruction gate: an adapted model must reproduce its model's own forward.

The identities of docs/theory.md hold for the decomposition an adapter builds, whatever network
that decomposition describes; only a comparison with the unmodified model can tell whether it
describes *this* model. On token ids ``(B, T)``, the adapter's layer inputs ``x_0 .. x_L`` and
logits ``head(x_L)`` are compared with the model's own ``output_hidden_states`` and logits.

``transformers`` models record their hidden states in one of two conventions (the same model
type may change between versions: Mamba-2 records layer outputs up to 5.24 and layer inputs
from 5.25)::

    inputs    H_l = x_l        (l = 0 .. L-1; H_L is the last output, often after the final norm)
    outputs   H_l = x_{l+1}    (l = 0 .. L-1; H_L is the final norm of x_L)

:func:`layer_offset` reads which one a model uses from its own first entry.
"""
from __future__ import annotations

from typing import Sequence

import torch


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (Frobenius, in float64; 0 when both vanish)."""
    a, b = a.detach().double(), b.detach().to(a.device).double()
    den = float(b.norm())
    num = float((a - b).norm())
    return num / den if den > 0 else num


def layer_offset(hidden: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> int:
    """0 if the model's hidden states ``hidden`` are layer inputs (``H_0`` is the embedding), 1 if
    they are layer outputs (``H_0`` is the first layer's output): the offset ``k`` with
    ``H_l = x_{l+k}``, read from which of ``x_0``, ``x_1`` the first entry is nearer to."""
    return 0 if _gap(xs[0], hidden[0]) <= _gap(xs[1], hidden[0]) else 1


def layer_gaps(hidden: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> list[float]:
    """The ``L`` relative gaps ``||x_{l+k} - H_l|| / ||H_l||``, ``l = 0 .. L-1``, under the model's
    convention ``k`` (:func:`layer_offset`); ``H_L`` is left to the logits (it may be normed)."""
    k = layer_offset(hidden, xs)
    n = len(xs) - 1
    return [_gap(xs[l + k], hidden[l]) for l in range(min(n, len(hidden)))]
