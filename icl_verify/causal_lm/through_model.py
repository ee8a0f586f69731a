"""The implicit updates checked through the model's own forward pass, independent of the
adapters' ``output``.

For a prompt ``ids`` ``(1, T)`` and the last position's update of every layer ``l``
(``dW_lk = u_lk r_l^T`` and ``ds_l``, reference: the query's layer input alone), the
unmodified ``transformers`` forward runs on the query alone with

- ``W_lk + dW_lk`` written into the actual parameters: every first matrix of an adapter is a
  view of a parameter (``Conv1D``'s transpose, one expert of a fused ``(E, 2m, d)`` tensor, the
  parameter itself), located by storage; a copy of that parameter with ``dW`` added through the
  same view replaces it in :func:`torch.func.functional_call` (no copy of the model);
- ``ds_l`` added where the bypass joins the layer (a forward hook on the layer's output, or a
  pre-hook on the module an adapter names with ``bypass_site()``: the last LayerNorm of a
  post-LN block);
- the layer-0 input of the query set to its embedding in the prompt (learned absolute positions
  keep the query's position).

The logits must equal the full prompt's next-token logits; the same run without updates (the
negative control) must not.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Sequence

import torch
from torch import nn

from ..adapters import AdaptedLM
from ..errors import UnsupportedModelError
from ..updates import ImplicitUpdate


def _parameter_of(view: torch.Tensor, params: dict[str, nn.Parameter]) -> str:
    """Name of the parameter whose storage holds ``view``."""
    ptr = view.untyped_storage().data_ptr()
    for name, p in params.items():
        if p.untyped_storage().data_ptr() == ptr:
            return name
    raise UnsupportedModelError("a first matrix of an adapter is not a view of any parameter of the model")


def updated_parameters(lm: AdaptedLM, updates: Sequence[ImplicitUpdate]) -> dict[str, torch.Tensor]:
    """``{name: W + dW}`` for every parameter holding a first matrix (updates with leading dims
    ``(1,)``); each is a copy of the parameter with ``dW`` added through the adapter's view."""
    params = dict(lm.model.named_parameters())
    new: dict[str, torch.Tensor] = {}
    for block, upd in zip(lm.stack.blocks, updates):
        for (w, _), dw in zip(block.first_layers(), upd.dense()):
            name = _parameter_of(w, params)
            p = params[name]
            if name not in new:
                new[name] = p.detach().clone()
            copy = new[name]
            offset = w.storage_offset() - p.storage_offset() + copy.storage_offset()
            if not p.is_contiguous():
                raise UnsupportedModelError(f"parameter {name} is not contiguous")
            copy.as_strided(w.shape, w.stride(), offset).add_(dw.reshape(w.shape).to(copy.dtype))
    return new


def _add_shift(site: tuple[nn.Module, str], shift: torch.Tensor):
    module, where = site

    def on_output(_m, _args, out):
        if isinstance(out, tuple):
            return (out[0] + shift,) + out[1:]
        return out + shift

    def on_input(_m, args):
        return (args[0] + shift,) + args[1:]

    return (module.register_forward_hook(on_output) if where == "output"
            else module.register_forward_pre_hook(on_input))


def _bypass_site(block) -> tuple[nn.Module, str]:
    site = getattr(block, "bypass_site", None)
    return site() if site is not None else (block.layer, "output")


def query_logits(lm: AdaptedLM, ids: torch.Tensor, updates: Sequence[ImplicitUpdate] | None) -> torch.Tensor:
    """Next-token logits ``(V,)`` of the model's own forward on the query alone (the last token
    of ``ids`` ``(1, T)``), with every layer's update written in (``None``: the control)."""
    x0 = lm.embed(ids)[:, -1:]
    first = lm.stack.blocks[0].layer
    with ExitStack() as hooks:
        hooks.callback(first.register_forward_pre_hook(
            lambda _m, args, kwargs: ((x0,) + args[1:], kwargs) if args else
            ((), {**kwargs, next(iter(kwargs)): x0}), with_kwargs=True).remove)
        params = {}
        if updates is not None:
            params = updated_parameters(lm, updates)
            for block, upd in zip(lm.stack.blocks, updates):
                if upd.shift is not None:
                    hooks.callback(_add_shift(_bypass_site(block), upd.shift.reshape(1, 1, -1)).remove)
        out = torch.func.functional_call(lm.model, params, (ids[:, -1:],), {"use_cache": False}, strict=False)
    return out.logits[0, -1]


def through_model_check(lm: AdaptedLM, ids: torch.Tensor, updates: Sequence[ImplicitUpdate]) -> dict:
    """The query alone through the model's own forward with ``W + dW`` and ``s + ds`` against the
    full prompt's logits, and the negative control (no updates)."""
    full = lm.model(ids, use_cache=False).logits[0, -1]
    upd = query_logits(lm, ids, updates).to(full)
    ctrl = query_logits(lm, ids, None).to(full)
    rel = lambda a: float((a - full).norm() / full.norm())  # noqa: E731
    return {
        "logits_rel_diff": rel(upd),
        "logits_max_abs_diff": float((upd - full).abs().max()),
        "control_rel_diff": rel(ctrl),
        "same_prediction": bool(upd.argmax() == full.argmax()),
        "control_same_prediction": bool(ctrl.argmax() == full.argmax()),
    }
