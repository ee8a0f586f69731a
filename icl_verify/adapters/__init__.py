"""Adapters: decoder/encoder layers of real ``transformers`` architectures expressed in the
decomposition of docs/theory.md §1 (per position: network input ``z``, bypass ``s``, first dense
matrices), so every update, property and benchmark applies to them unchanged.

Most model types are one declarative :class:`LayerRecord` (:mod:`.catalog`) read by one generic
adapter (:class:`RecordAdapter`); Mamba and RecurrentGemma have hand-written adapters.

Importing this package needs no ``transformers``: the family modules import it only when a
model is built, and :func:`list_architectures` is empty without it.
"""
from ._registry import (
    AdaptedLM,
    ArchitectureInfo,
    adapt_causal_lm,
    get_architecture,
    list_architectures,
    register_architecture,
    register_model_adapter,
)
from .records import LayerRecord, RecordAdapter, adapt_record_lm, list_records, register_record, tiny_causal_lm
from . import catalog, mamba, recurrent_gemma  # noqa: F401  (register)
from .mamba import MambaAdapter
from .recurrent_gemma import RecurrentGemmaAdapter

__all__ = [
    "AdaptedLM",
    "ArchitectureInfo",
    "LayerRecord",
    "MambaAdapter",
    "RecordAdapter",
    "RecurrentGemmaAdapter",
    "adapt_causal_lm",
    "adapt_record_lm",
    "get_architecture",
    "list_architectures",
    "list_records",
    "register_architecture",
    "register_model_adapter",
    "register_record",
    "tiny_causal_lm",
]
