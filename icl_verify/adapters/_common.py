"""Shared pieces of the adapters: optional import of ``transformers``, masks, positions, and
seeded tiny random models built offline from config objects."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..seeding import seeded

INSTALL_HINT = "install the optional extra: pip install 'icl-verify[models]'"


def transformers_available() -> bool:
    """Whether ``transformers`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("transformers") is not None


def require_transformers() -> Any:
    """The ``transformers`` module, or an :class:`ImportError` saying how to install it."""
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"the transformers adapters need the 'transformers' package; {INSTALL_HINT}") from exc


def attention_mask(t: int, dtype: torch.dtype, device: torch.device, *, causal: bool = True,
                   window: int | None = None) -> torch.Tensor:
    """Additive attention mask ``(1, 1, T, T)``: 0 where query ``i`` may read key ``j``, the
    dtype's lowest value elsewhere. Causal: ``j <= i``; a sliding ``window`` additionally keeps
    ``j > i - window`` (the convention of ``transformers.masking_utils``)."""
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    keep = torch.ones(t, t, dtype=torch.bool, device=device)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= j > i - window
    mask = torch.zeros(t, t, dtype=dtype, device=device)
    mask.masked_fill_(~keep, torch.finfo(dtype).min)
    return mask[None, None]


def position_ids(x: torch.Tensor) -> torch.Tensor:
    """Positions ``0..T-1`` for a sequence ``x`` ``(B, T, d)``: ``(B, T)`` long. A length-1
    sequence is position 0."""
    b, t = x.shape[:2]
    return torch.arange(t, device=x.device)[None].expand(b, t)


def tiny_model(model_cls: type, config: Any, *, seed: int, dtype: torch.dtype) -> nn.Module:
    """A seeded random ``model_cls(config)`` in eval mode, cast to ``dtype``.

    Norm weights (and biases) are perturbed away from their initial ones (zeros), so a norm the
    adapter forgot, or applied twice, changes the output visibly.
    """
    with seeded(seed):
        model = model_cls(config)
        with torch.no_grad():
            for module in model.modules():
                if "norm" in type(module).__name__.lower():
                    for pname, p in module.named_parameters(recurse=False):
                        p.add_(0.2 * torch.randn_like(p) if pname == "weight" else 0.1 * torch.randn_like(p))
    return model.eval().to(dtype)



def eager_experts(model: nn.Module) -> None:
    """A float64 model with fused experts runs transformers' eager loop over experts (the grouped
    kernels have no float64; the arithmetic is the same)."""
    if next(model.parameters()).dtype == torch.float64 and hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")


class _Reached(Exception):
    """Raised by the pre-hook on the module where a forward pass is cut short."""


def run_until(stop_at: nn.Module, run: Callable[[], Any], *,
              inputs: dict[str, nn.Module] | None = None,
              outputs: dict[str, nn.Module] | None = None) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Call ``run()`` (an unmodified ``transformers`` forward) until ``stop_at`` is called, and stop there.

    Returns ``stop_at``'s first input (``None`` if it was never reached; for an adapter,
    ``stop_at`` is the module holding the first dense matrix and this is ``z``, ``(B, T, d_z)``)
    and the tensors read on the way: for each ``name -> module`` of ``inputs`` that module's first
    input, of ``outputs`` its first output (the names of modules not reached are absent).
    """
    got: dict[str, torch.Tensor] = {}

    def reader(key: str, stop: bool = False):
        def hook(_m, args, kwargs):
            got[key] = args[0] if args else next(iter(kwargs.values()))
            if stop:
                raise _Reached
        return hook

    def output_reader(key: str):
        def hook(_m, _args, out):
            got[key] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    stop_key = object()
    hooks = [m.register_forward_pre_hook(reader(k), with_kwargs=True) for k, m in (inputs or {}).items()]
    hooks += [m.register_forward_hook(output_reader(k)) for k, m in (outputs or {}).items()]
    hooks.append(stop_at.register_forward_pre_hook(reader(stop_key, stop=True), with_kwargs=True))
    try:
        run()
    except _Reached:
        pass
    finally:
        for h in hooks:
            h.remove()
    return got.pop(stop_key, None), got


class LayerCalls:
    """The arguments besides the hidden states that a model's own forward passes to each of its
    decoder ``layers`` (masks, positions, rotary tables), on token ids of shape ``(B, T)``:
    captured with pre-hooks once per ``(B, T, dtype, device)`` and replayed, so an adapter calls
    each layer exactly as the model does."""

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module]):
        self.model = model
        self.layers = list(layers)
        self._cache: dict[tuple, dict[int, tuple[tuple, dict]]] = {}

    def __call__(self, index: int, x: torch.Tensor) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of layer ``index`` for hidden states ``x`` ``(B, T, d)``."""
        key = (x.shape[0], x.shape[1], x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = self._capture(x.shape[0], x.shape[1])
        return self._cache[key][index]

    def _capture(self, b: int, t: int) -> dict[int, tuple[tuple, dict]]:
        table = self.model.get_input_embeddings().weight
        ids = (torch.arange(t, device=table.device) % table.shape[0])[None].expand(b, t)
        got: dict[int, tuple[tuple, dict]] = {}
        last = len(self.layers) - 1

        def reader(i: int):
            def hook(_m, args, kwargs):
                got[i] = (tuple(args[1:]), dict(kwargs))
                if i == last:
                    raise _Reached
            return hook

        handles = [layer.register_forward_pre_hook(reader(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        try:
            with torch.no_grad():
                self.model(input_ids=ids, use_cache=False)
        except _Reached:
            pass
        finally:
            for h in handles:
                h.remove()
        return got
