"""Adapters: decoder/encoder layers of real ``transformers`` architectures expressed in the
decomposition of DESIGN §1 (per position: network input ``z``, bypass ``s``, first dense
matrices), so every update, property and benchmark applies to them unchanged.

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
from . import bert, gpt2, gpt_neox, hybrid, llama, mamba, mamba2, recurrent_gemma  # noqa: F401  (register)
from .bert import BertAdapter
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .llama import LlamaAdapter
from .mamba import MambaAdapter
from .recurrent_gemma import RecurrentGemmaAdapter

__all__ = [
    "AdaptedLM",
    "ArchitectureInfo",
    "BertAdapter",
    "GPT2Adapter",
    "GPTNeoXAdapter",
    "LlamaAdapter",
    "MambaAdapter",
    "RecurrentGemmaAdapter",
    "adapt_causal_lm",
    "get_architecture",
    "list_architectures",
    "register_architecture",
    "register_model_adapter",
]
