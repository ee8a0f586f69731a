"""Adapting a whole causal language model: its registered adapter, else a recognised layout,
accepted only through the reconstruction gate."""
from __future__ import annotations

import torch
from torch import nn

from ._registry import MODEL_ADAPTERS, AdaptedLM
from .gate import check_reconstruction
from .recognise import adapt_recognised


def adapt_causal_lm(model: nn.Module, ids: torch.Tensor | None = None) -> AdaptedLM:
    """Wrap a loaded ``transformers`` causal LM as :class:`AdaptedLM` (no copy of weights), once
    its adapter reproduces the model's own forward on ``ids`` ``(B, T)`` (default: two random
    probe sequences) in the model's current dtype (the reconstruction gate, :mod:`.gate`). The
    adapter is the one registered for ``config.model_type``, else a record recognised from the
    model's module tree (:mod:`.recognise`).

    Raises:
        UnsupportedModelError: no adapter, and the layout is not recognised (the part is named).
        ReconstructionError: the adapter's layers or logits differ from the model's own.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in MODEL_ADAPTERS:
        lm = MODEL_ADAPTERS.get(model_type)(model)
    else:
        return adapt_recognised(model, ids)
    check_reconstruction(lm, ids)
    return lm
