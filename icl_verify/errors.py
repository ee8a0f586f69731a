"""Typed errors. Every one names what was wrong, and where (block, position) when known."""
from __future__ import annotations


class ICLVerifyError(ValueError):
    """Base class of every error raised by icl_verify on bad input."""


class ShapeError(ICLVerifyError):
    """A tensor has the wrong number of dimensions or the wrong sizes."""


class DTypeError(ICLVerifyError):
    """Tensors of different or unsupported floating dtypes were mixed."""


class NonFiniteError(ICLVerifyError):
    """An input (or the representation computed from it) holds NaN or inf."""


class EmptyContextError(ICLVerifyError):
    """A context of length zero was given where at least one token is required."""


class DegenerateReferenceError(ICLVerifyError):
    """The reference network input ``z_r`` is zero: no rank-one update ``u z_r^T/||z_r||^2`` exists."""


class InconsistentEvaluationError(ICLVerifyError):
    """Two evaluations of the same quantity that a claim takes as equal (the network input of one
    sequence) differ: they ran through different kernels, whose rounding no error model bounds."""


class UnknownNameError(ICLVerifyError, KeyError):
    """No record (layer, composition, architecture, model type, task) has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(ICLVerifyError):
    """A name was registered twice in one registry (without ``replace=True``)."""


class UnsupportedModelError(ICLVerifyError):
    """A model whose layers do not have the shape an adapter needs (for example no dense first
    operation on the mixed stream, or a layout its record does not describe)."""


class ReconstructionError(ICLVerifyError):
    """An adapted model does not reproduce its model's own forward (a layer's output or the
    logits differ beyond the gate's tolerance): its decomposition describes a different network,
    and no claim about it says anything of the model."""


OUTSIDE_HYPOTHESES = (NonFiniteError, DegenerateReferenceError)
"""The errors that put an instance outside every claim's hypotheses (finite values, ``z_r != 0``):
a value that overflows its dtype, or a reference input that is or rounds to zero. ``icl-verify
verify`` reports such an instance as not checked; the property suite rejects it."""

#: The names these errors had when only layers were registered.
UnknownLayerError = UnknownNameError
DuplicateLayerError = DuplicateNameError


def where(block: int | None = None, position: int | None = None) -> str:
    """A short location string, for example ``" (block 2, position 7)"``."""
    parts = []
    if block is not None:
        parts.append(f"block {block}")
    if position is not None:
        parts.append(f"position {position}")
    return f" ({', '.join(parts)})" if parts else ""
