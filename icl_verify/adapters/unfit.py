"""Model types whose layers do not have the decomposition's shape: adapting one raises
:class:`~icl_verify.errors.UnsupportedModelError` with the reason, instead of "no adapter".

``REASONS[model_type]`` says which part of the layer breaks it (no single input ``z`` read by
every first dense matrix after the mixing, or a network that itself reads other positions).
"""
from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from ._registry import register_model_adapter

REASONS = {
    "rwkv": "its channel-mixing network reads other positions (a token shift mixes x_t with x_{t-1}) and its "
            "first matrices, key and receptance, read two different such mixes: no single input z of the "
            "network, and the rest of the network is not position-wise",
}


def _refuse(model: nn.Module):
    model_type = model.config.model_type
    raise UnsupportedModelError(f"model type {model_type!r} does not fit the implicit-update decomposition: "
                                f"{REASONS[model_type]}")


for _model_type in REASONS:
    register_model_adapter(_model_type, _refuse)
