"""What every property shares: the registry as pytest parameters, and :func:`verdict`, which
reports a :class:`~icl_verify.claims.Check` to Hypothesis and to the ratio report.

The ratio report keeps, per (claim, layer), the worst ``error / tolerance`` seen in this process;
:mod:`icl_verify.properties.plugin` gathers it from every xdist worker and prints it with
``--report``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import pytest
from hypothesis import reject, target

from icl_verify.blocks import build_block, list_compositions
from icl_verify.claims import Check
from icl_verify.errors import OUTSIDE_HYPOTHESES
from icl_verify.prefix_cache import has_fast_path
from icl_verify.layers import get_layer, list_layers

RATIOS: dict[tuple[str, str], float] = {}
"""Worst ratio seen per ``(claim, layer)`` in this process."""

_RECORDING = [True]


def layers(*, vanishing: bool | None = None, fast_path: bool | None = None) -> list:
    """Every registered layer name as a pytest parameter (id = the name); with ``vanishing``
    only those whose ``vanishing_increments`` flag equals it, with ``fast_path`` only those
    whose modules have (or lack) ``states`` and ``step`` (:func:`icl_verify.prefix_cache.has_fast_path`)."""
    return [pytest.param(n, id=n) for n in list_layers()
            if (vanishing is None or get_layer(n).vanishing_increments == vanishing)
            and (fast_path is None or _has_fast_path(n) == fast_path)]


def _has_fast_path(name: str) -> bool:
    """Whether a small instance of layer ``name`` has ``states`` and ``step``; ``True`` for a layer
    that cannot be built, whose fast-path tests then show why instead of a collection error
    stopping the whole suite."""
    info = get_layer(name)
    heads = info.heads[0]
    try:
        block = build_block(name, "none", info.valid_dims(heads)[0], heads=heads)
    except Exception:  # noqa: BLE001 - any failure of a user's factory is reported by the tests
        return True
    return has_fast_path(block)


def compositions() -> list:
    """Every block composition as a pytest parameter."""
    return [pytest.param(c, id=c) for c in list_compositions()]


def record(claim: str, layer: str, ratio: float) -> None:
    """Steer Hypothesis towards a larger ``ratio`` (label ``claim``) and keep the worst per
    ``(claim, layer)`` for the report. Non-finite ratios count as infinite."""
    if not math.isfinite(ratio):
        ratio = math.inf
    else:
        target(ratio, label=claim)
    if _RECORDING[0]:
        key = (claim, layer)
        RATIOS[key] = max(RATIOS.get(key, 0.0), ratio)


def verdict(checks: Check | Sequence[Check], layer: str, *, claim: str | None = None) -> None:
    """Record the worst ratio of ``checks`` (one call to :func:`record`) and assert that every
    one passed, showing the worst ratio."""
    checks = [checks] if isinstance(checks, Check) else list(checks)
    claim = claim or checks[0].claim
    failed = [c for c in checks if not c.passed]
    record(claim, layer, max(c.worst_ratio if math.isfinite(c.worst_ratio) else math.inf
                             for c in checks))
    assert not failed, (
        f"{claim} fails for {layer}: worst error/tolerance {failed[0].worst_ratio:.3g} "
        f"(max error {failed[0].max_error:.3g}, max relative error {failed[0].max_relative:.3g}, "
        f"{len(failed)} of {len(checks)} checks fail)")


@contextlib.contextmanager
def applicable():
    """Reject (``hypothesis.reject``) an example outside a claim's hypotheses: the reference
    input ``z_r`` is zero (the claim then says a :class:`DegenerateReferenceError` is due; an
    instance with a tiny scale and tiny tokens in float32 can underflow to it), or a finite input
    overflowed inside the model (:class:`NonFiniteError`). ``test_bad_input`` checks that these
    errors are raised when, and only when, they should be."""
    try:
        yield
    except OUTSIDE_HYPOTHESES:
        reject()


@contextlib.contextmanager
def not_recorded():
    """Run properties without adding to the ratio report (for deliberately broken code)."""
    _RECORDING[0] = False
    try:
        yield
    finally:
        _RECORDING[0] = True


def architectures() -> list:
    """Every real architecture of :mod:`icl_verify.adapters` as a pytest parameter; empty when
    that package or ``transformers`` is missing, so the suite still runs without them."""
    try:
        from icl_verify.adapters import list_architectures
    except ImportError:
        return []
    return [pytest.param(n, id=n) for n in list_architectures()]


def build_architecture(name: str, *, seed: int, dtype):
    """``(stack, width)`` of the tiny random real architecture ``name``."""
    from icl_verify.adapters import get_architecture

    info = get_architecture(name)
    return info.build(seed=seed, dtype=dtype), info.width


class Corner:
    """An explicit example (``@example(data=Corner(layer, case=...))``) for a property that draws
    its instance with ``data.draw(..., label=name)``: each draw returns the value given for its
    label. Hypothesis runs explicit examples under every pytest parameter; :func:`only_for`
    rejects the runs of the other layers."""

    def __init__(self, layer: str, **values):
        self.layer, self.values = layer, values

    def draw(self, strategy, label=None):
        return self.values[label]

    def __repr__(self) -> str:
        return f"Corner({self.layer!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.values.items()) + ")"


def only_for(data, layer: str, composition: str | None = None) -> None:
    """Reject a :class:`Corner` written for another layer (or, given, another composition of its
    ``case``) than this run's parameters."""
    if isinstance(data, Corner) and (data.layer != layer or (
            composition is not None and data.values["case"].block.composition != composition)):
        reject()
