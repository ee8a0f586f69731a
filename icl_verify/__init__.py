"""icl_verify: in-context learning as an implicit rank-one weight update, checked.

Data flows one way: a contextual layer gives ``a``, a block composition gives the network input
``z`` and bypass ``s``, the update code reads only ``z``, ``s`` and the first dense matrices ``W``.
"""
from .blocks import (
    Block,
    ContextualBlock,
    Decomposition,
    Stack,
    build_block,
    build_stack,
    Composition,
    get_composition,
    list_compositions,
    register_composition,
)
from .errors import (
    DTypeError,
    DegenerateReferenceError,
    DuplicateLayerError,
    DuplicateNameError,
    EmptyContextError,
    ICLVerifyError,
    NonFiniteError,
    ShapeError,
    UnknownLayerError,
    UnknownNameError,
)
from .layers import LayerInfo, build_layer, get_layer, list_layers, register_layer
from .registry import Registry
from .updates import (
    ImplicitUpdate,
    apply_update,
    context_update,
    general_update,
    position_updates,
    run_stack_updated,
    run_updated,
    stack_updates,
    subset_update,
    target_output,
)

__version__ = "0.1.0"

__all__ = [
    "Block", "ContextualBlock", "Decomposition", "Stack", "build_block", "build_stack",
    "Composition", "get_composition", "list_compositions", "register_composition",
    "DTypeError", "DegenerateReferenceError", "DuplicateLayerError", "DuplicateNameError",
    "EmptyContextError", "ICLVerifyError", "NonFiniteError", "ShapeError", "UnknownLayerError",
    "UnknownNameError", "Registry",
    "LayerInfo", "build_layer", "get_layer", "list_layers", "register_layer",
    "ImplicitUpdate", "apply_update", "context_update", "general_update", "position_updates",
    "run_stack_updated", "run_updated", "stack_updates", "subset_update", "target_output",
]
