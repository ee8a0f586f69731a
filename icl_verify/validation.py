"""Input validation shared by every entry point: shapes, dtypes, finiteness."""
from __future__ import annotations

import torch
from torch import nn

from .errors import DTypeError, NonFiniteError, ShapeError, where

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of a module's parameters; :class:`DTypeError` if they are mixed."""
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
    if len(dtypes) > 1:
        raise DTypeError(f"{type(module).__name__} mixes parameter dtypes {sorted(map(str, dtypes))}")
    return dtypes.pop() if dtypes else torch.get_default_dtype()


def check_tensor(
    x: torch.Tensor,
    name: str,
    *,
    ndim: int,
    dtype: torch.dtype,
    width: int | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a finite floating tensor with ``ndim`` dimensions, dtype ``dtype`` and
    last size ``width``; raise the matching typed error otherwise. Returns ``x``."""
    loc = where(block)
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}{loc}")
    if x.ndim != ndim:
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}{loc}")
    if width is not None and x.shape[-1] != width:
        raise ShapeError(f"{name} must have last size {width} (the model width), got shape {tuple(x.shape)}{loc}")
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{name} must be a floating tensor, got {x.dtype}{loc}")
    if x.dtype != dtype:
        raise DTypeError(f"{name} has dtype {x.dtype} but the block's parameters are {dtype}{loc}")
    check_finite(x, name, block=block)
    return x


def check_finite(x: torch.Tensor, name: str, *, block: int | None = None) -> None:
    """:class:`NonFiniteError` naming the first non-finite position of ``x`` ``(B, T, ...)``."""
    if torch.isfinite(x.sum()):  # one pass: a NaN or inf anywhere makes the sum NaN or inf
        return
    bad = ~torch.isfinite(x)
    if bad.any():
        idx = [int(i) for i in bad.nonzero()[0]]
        position = idx[1] if x.ndim >= 3 else None
        raise NonFiniteError(
            f"{name} holds NaN or inf (first at index {tuple(idx)}){where(block, position)}"
        )
