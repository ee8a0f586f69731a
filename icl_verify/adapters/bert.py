"""BERT layers: post-LayerNorm (docs/theory.md §1, post-LN row), absolute positions added to the
embeddings.

Per position::

    z = LN_1(x + Attn(X))                  (BertAttention: self-attention, dense, LayerNorm)
    s = z
    out = LN_2(s + dense_2(act(W z + b)))  (W = intermediate.dense)

BERT is an encoder: its attention is bidirectional, so position ``t`` also reads later tokens.
The adapter takes ``causal=True`` (BERT used as a decoder, ``is_decoder=True``) or ``False``
(the encoder); the identity at one position holds either way, but only the causal form is a
contextual layer in the sense of docs/theory.md §1 (the output at ``t`` depends on tokens ``1..t``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import attention_mask, require_transformers, tiny_model
from ._registry import register_architecture


class BertAdapter(ContextualBlock):
    """One unmodified ``BertLayer`` ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, layer: nn.Module, *, causal: bool = True):
        super().__init__()
        self.layer = layer
        self.causal = causal

    def decompose(self, x: torch.Tensor) -> Decomposition:
        mask = attention_mask(x.shape[1], x.dtype, x.device, causal=self.causal)
        z, _ = self.layer.attention(x, mask)
        return Decomposition(z, z)

    def first_layers(self):
        dense = self.layer.intermediate.dense
        return ((dense.weight, dense.bias),)

    def output(self, hs, s):
        out = self.layer.output
        return out.LayerNorm(out.dense(self.layer.intermediate.intermediate_act_fn(hs[0])) + s)

    def extra_repr(self) -> str:
        return f"causal={self.causal}"


def tiny_bert(*, seed: int = 0, dtype: torch.dtype = torch.float64, causal: bool = True) -> nn.Module:
    """A tiny random ``BertModel``: width 32, 2 layers, 4 heads (a decoder when ``causal``)."""
    tf = require_transformers()
    config = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=128, initializer_range=0.2,
                           is_decoder=causal, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tiny_model(tf.BertModel, config, seed=seed, dtype=dtype)


def bert_stack(model: nn.Module, *, causal: bool = True) -> Stack:
    """Adapter stack over the layers of a ``BertModel``'s encoder."""
    return Stack([BertAdapter(layer, causal=causal) for layer in model.encoder.layer])


def _bert_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> Stack:
    """Adapter stack of a tiny random causal BERT (width 32, 2 layers)."""
    return bert_stack(tiny_bert(seed=seed, dtype=dtype))


register_architecture("bert", _bert_stack, tags=("attention", "post_ln"))
