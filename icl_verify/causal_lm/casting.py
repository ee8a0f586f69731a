"""Casting a model to several dtypes in turn, each time from its own values.

``model.to(bfloat16)`` rounds every weight; a later ``model.to(float32)`` keeps the rounded
values, so a float32 check after a bfloat16 one would run on another model, and the model handed
back would not be the one received. :func:`exact_casts` rounds once from the values on entry for
every dtype and hands the model back with those values and dtypes, bit for bit.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


def _slots(model: nn.Module) -> list[tuple[dict, str]]:
    """Every floating parameter and buffer, persistent or not, as ``(the dict holding it, key)``;
    a parameter shared by several modules (tied weights) once: ``model.to`` keeps it shared and
    changes its ``.data``. A buffer is listed in every module that holds it, because ``model.to``
    gives each module its own converted copy."""
    seen, slots = set(), []
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, t in table.items():
                if t is None or not t.is_floating_point() or id(t) in seen:
                    continue
                if isinstance(t, nn.Parameter):
                    seen.add(id(t))
                slots.append((table, key))
    return slots


@contextlib.contextmanager
def exact_casts(model: nn.Module) -> Iterator[Callable[[torch.dtype], nn.Module]]:
    """Yields ``cast(dtype)``, which puts ``model`` in ``dtype`` rounded once from its values on
    entry (not from the previous cast). On exit every floating parameter and buffer is back in its
    own dtype with its value on entry. A copy of the values (on the CPU) is taken only before the
    first cast to a dtype that cannot hold them all, say bfloat16 for a float32 model."""
    slots = _slots(model)
    dtypes = [table[key].dtype for table, key in slots]
    kept: list[torch.Tensor] | None = None
    rounded = False

    def restore() -> None:
        for (table, key), dtype, value in zip(slots, dtypes, kept or [None] * len(slots)):
            t = table[key]
            new = (t if value is None else value).to(device=t.device, dtype=dtype)
            if isinstance(t, nn.Parameter):
                t.data = new
            else:
                table[key] = new

    def cast(dtype: torch.dtype) -> nn.Module:
        nonlocal kept, rounded
        if rounded:
            restore()
        lossy = any(torch.promote_types(d, dtype) != dtype for d in dtypes)
        if lossy and kept is None:
            kept = [table[key].detach().to("cpu", copy=True) for table, key in slots]
        rounded = lossy
        for table, key in slots:  # model.to(dtype), which accelerate forbids on a dispatched model
            t = table[key]
            if isinstance(t, nn.Parameter):
                t.data = t.data.to(dtype)
            else:
                table[key] = t.to(dtype)
        return model

    try:
        yield cast
    finally:
        restore()
