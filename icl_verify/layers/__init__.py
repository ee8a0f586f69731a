"""Contextual layers: causal maps ``(B, T, d) -> (B, T, d)``, one module per family, and the
registry. Importing this package registers every built-in layer."""
from ._registry import (
    LayerInfo,
    build_layer,
    get_layer,
    list_layers,
    register_layer,
    unregister_layer,
)
from . import attention  # noqa: F401  (registers)
from . import linear_attention, recurrent, griffin, mamba  # noqa: F401  (register)
from . import attention_variants, gated_deltanet, mamba2, mlstm, slstm, rwkv7, retention, mingru  # noqa: F401

__all__ = [
    "LayerInfo",
    "build_layer",
    "get_layer",
    "list_layers",
    "register_layer",
    "unregister_layer",
]
