"""Adapters: decoder/encoder layers of real ``transformers`` architectures expressed in the
decomposition of docs/theory.md §1 (per position: network input ``z``, bypass ``s``, first dense
matrices), so every update, property and benchmark applies to them unchanged.

Most model types are one declarative :class:`LayerRecord` (:mod:`.catalog`) read by one generic
adapter (:class:`RecordAdapter`); Mamba (and Mamba-2) and RecurrentGemma have hand-written adapters,
hybrid attention/recurrent models (:mod:`.hybrid`) one :class:`HybridRecord` each. A type with none
gets a record recognised from its module tree (:mod:`.recognise`). No adapted model is used until
it reproduces its model's own forward (the reconstruction gate, :mod:`.gate`).

Importing this package needs no ``transformers``: the family modules import it only when a
model is built, and :func:`list_architectures` is empty without it.
"""
from ._registry import (
    AdaptedLM,
    ArchitectureInfo,
    get_architecture,
    list_architectures,
    register_architecture,
    register_model_adapter,
)
from .adapt import adapt_causal_lm
from .records import LayerRecord, RecordAdapter, adapt_record_lm, list_records, register_record, tiny_causal_lm
from . import catalog, hybrid, mamba_blocks, mamba2_blocks, nemotron_h, recurrent_gemma, unfit  # noqa: F401  (register)
from .gate import check_reconstruction, reconstruction
from .hybrid import HybridAdapter, HybridRecord
from .mamba_blocks import MambaAdapter
from .recurrent_gemma import RecurrentGemmaAdapter

__all__ = [
    "AdaptedLM",
    "ArchitectureInfo",
    "HybridAdapter",
    "HybridRecord",
    "LayerRecord",
    "MambaAdapter",
    "RecordAdapter",
    "RecurrentGemmaAdapter",
    "adapt_causal_lm",
    "adapt_record_lm",
    "check_reconstruction",
    "get_architecture",
    "list_architectures",
    "list_records",
    "reconstruction",
    "register_architecture",
    "register_model_adapter",
    "register_record",
    "tiny_causal_lm",
]
