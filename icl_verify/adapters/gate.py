"""The reconstruction gate: an adapted model must reproduce its model's own forward.

The identities of docs/theory.md hold for the decomposition an adapter builds, whatever network
that decomposition describes; only a comparison with the unmodified model can tell whether it
describes *this* model. On token ids ``(B, T)``, the adapter's layer inputs ``x_0 .. x_L`` and
logits ``head(x_L)`` are compared with the model's own ``output_hidden_states`` and logits.

``transformers`` models record their hidden states in one of two conventions (a model type may
change between versions: Mamba-2 records layer outputs up to 5.24 and layer inputs from 5.25)::

    inputs    H_l = x_l        (l = 0 .. L-1; H_L is the last output, often after the final norm)
    outputs   H_l = x_{l+1}    (l = 0 .. L-1; H_L is the final norm of x_L)

:func:`layer_offset` reads which one a model uses from its own first entry. Each stage ``k``
(the embedding ``k = 0``, layer ``l``'s output ``k = l + 1``, the logits ``k = L + 1``) has the
tolerance of :func:`gate_tolerance`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import NonFiniteError, ReconstructionError, UnsupportedModelError
from ..error_model import TAIL, rho, unit_roundoff

PROBE_LENGTH = 12
"""Tokens of each of the two probe sequences :func:`probe_ids` draws when no prompt is given."""


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (Frobenius, in float64; ``||a - b||`` when ``b = 0``)."""
    a, b = a.detach().double(), b.detach().to(a.device).double()
    den = float(b.norm())
    num = float((a - b).norm())
    return num / den if den > 0 else num


def layer_offset(hidden: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> int:
    """0 if the model's hidden states ``hidden`` are layer inputs (``H_0`` is the embedding), 1 if
    they are layer outputs (``H_0`` is the first layer's output): the offset ``k`` with
    ``H_l = x_{l+k}``, read from which of ``x_0``, ``x_1`` the first entry is nearer to."""
    return 0 if _gap(xs[0], hidden[0]) <= _gap(xs[1], hidden[0]) else 1


def layer_gaps(hidden: Sequence[torch.Tensor], xs: Sequence[torch.Tensor]) -> dict[int, float]:
    """``{j: ||x_j - H_{j-k}|| / ||H_{j-k}||}`` for the ``L`` entries ``H_0 .. H_{L-1}`` under the
    model's convention ``k`` (:func:`layer_offset`): ``j = 0 .. L-1`` (inputs) or ``1 .. L``
    (outputs); ``H_L`` is left to the logits (it may be normed)."""
    k = layer_offset(hidden, xs)
    n = min(len(xs) - 1, len(hidden))
    return {l + k: _gap(xs[l + k], hidden[l]) for l in range(n)}


def gate_tolerance(stage: int, width: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """``TAIL sqrt(k + 1) (rho(d) + u)``: the relative gap a correct adapter may show at stage ``k``
    in ``dtype``. An adapter computes what its layer computes, up to the order of a few sums (a
    parallel block's ``x + a + f``, the experts of a mixture, an attention mask's kernel); each
    stage adds at most one ``d``-term reduction's rounding (standard deviation ``rho(d) + u``,
    :func:`icl_verify.error_model.primitives.rho`) and these add up as independent errors over the stages."""
    return TAIL * (stage + 1) ** 0.5 * (rho(width, dtype, device) + unit_roundoff(dtype))


@dataclass(frozen=True)
class Reconstruction:
    """Gaps of an adapted model against its model's own forward, per stage.

    Attributes:
        stages: names: ``"embedding"`` (the first layer's input) and ``"layer l"`` (its output),
            as the model records them, then ``"logits"``.
        gaps: relative gaps ``||adapter - model|| / ||model||``, one per stage.
        tolerances: :func:`gate_tolerance` of each stage.
        dtypes: each stage's dtype (the logits': the coarser of the adapter's and the model's,
            whose forward may round its logits to float32).
        width: the model width ``d`` of the tolerances.
    """

    stages: tuple[str, ...]
    gaps: tuple[float, ...]
    tolerances: tuple[float, ...]
    dtypes: tuple[torch.dtype, ...]
    width: int

    @property
    def ratio(self) -> float:
        """The worst gap over its tolerance (at most 1: the gate passes)."""
        return max(g / t for g, t in zip(self.gaps, self.tolerances))

    def first_mismatch(self) -> int | None:
        """Index of the first stage whose gap exceeds its tolerance, or ``None``."""
        return next((i for i, (g, t) in enumerate(zip(self.gaps, self.tolerances)) if not g <= t), None)


def _model_type(lm) -> str:
    return getattr(getattr(lm.model, "config", None), "model_type", type(lm.model).__name__)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def probe_ids(model, t: int = PROBE_LENGTH, seed: int = 0) -> torch.Tensor:
    """``(2, t)`` seeded random token ids of ``model``'s vocabulary, on its embedding's device."""
    table = model.get_input_embeddings()
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, table.weight.shape[0], (2, t), generator=g).to(table.weight.device)


def _coarser(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    return a if unit_roundoff(a) >= unit_roundoff(b) else b


def reconstruction(lm, ids: torch.Tensor) -> Reconstruction:
    """The gaps of ``lm`` (:class:`~icl_verify.adapters.AdaptedLM`) against ``lm.model``'s own
    forward on ``ids`` ``(B, T)``: each layer's output, then the logits. :class:`NonFiniteError`
    (outside every claim's hypotheses) when the model's own forward overflows."""
    with torch.no_grad():
        out = lm.model(ids, output_hidden_states=True, use_cache=False)
        if not all(bool(torch.isfinite(t).all()) for t in (*out.hidden_states, out.logits)):
            raise NonFiniteError(f"the own forward of model type {_model_type(lm)!r} is not finite in "
                                 f"{out.logits.dtype}: nothing to compare the adapter with")
        try:
            xs = lm.stack.block_inputs(lm.embed(ids))
            logits = lm.head(xs[-1])
        except (RuntimeError, AttributeError, TypeError, IndexError, KeyError) as exc:
            raise UnsupportedModelError(
                f"the adapter of model type {_model_type(lm)!r} cannot run where its model runs: "
                f"{type(exc).__name__}: {_first_line(exc)}") from exc
    layers = layer_gaps(out.hidden_states, xs)
    dtype, width, device = xs[-1].dtype, xs[-1].shape[-1], xs[-1].device
    logit_dtype = _coarser(dtype, _coarser(logits.dtype, out.logits.dtype))
    stages = tuple("embedding" if j == 0 else f"layer {j - 1}" for j in layers) + ("logits",)
    gaps = tuple(layers.values()) + (_gap(logits, out.logits),)
    tols = tuple(gate_tolerance(j, width, dtype, device) for j in layers)
    tols += (gate_tolerance(len(xs), width, logit_dtype, device),)
    return Reconstruction(stages, gaps, tols, (dtype,) * len(layers) + (logit_dtype,), width)


def check_reconstruction(lm, ids: torch.Tensor | None = None) -> Reconstruction:
    """:func:`reconstruction` on ``ids`` (default :func:`probe_ids`), or a
    :class:`~icl_verify.errors.ReconstructionError` naming the first stage that differs."""
    rec = reconstruction(lm, probe_ids(lm.model) if ids is None else ids)
    i = rec.first_mismatch()
    if i is not None:
        model_type = _model_type(lm)
        what = {"logits": "the logits (the last layer's output or the head)", "embedding": "the embedding"}.get(
            rec.stages[i], f"the output of {rec.stages[i]}")
        to32 = gate_tolerance(0, rec.width, torch.float32) / gate_tolerance(0, rec.width, torch.float64)
        coarse = rec.dtypes[i] == torch.float64 and rec.gaps[i] <= rec.tolerances[i] * to32
        why = ("the gap is within float32 rounding: the model computes part of its forward in float32 (a router "
               "in float32, say), which no float64 decomposition reproduces; check it in float32" if coarse
               else "its record (or adapter) describes a different network")
        dtype = str(rec.dtypes[i]).split(".")[-1]
        raise ReconstructionError(
            f"the adapter of model type {model_type!r} does not reproduce the model's own forward: {what} differs "
            f"by {rec.gaps[i]:.3g} relative (tolerance {rec.tolerances[i]:.3g} in {dtype}); {why}")
    return rec
