"""Llama-family decoder layers (Llama, Mistral, Qwen2, Gemma, Gemma 2): pre-RMSNorm, rotary
positions, gated MLP ``down(act(gate z) * up z)``.

Per position (docs/theory.md §1, pre-norm row)::

    a = N_a(Attn(N_1(X)))         N_a: Gemma 2's post-attention norm, identity otherwise
    s = x + a                     bypass
    z = N_2(s)                    network input; first matrices: gate_proj, up_proj
    out = s + N_f(down(act(W_g z + b_g) * (W_u z + b_u)))

``N_f`` is Gemma 2's post-feed-forward norm (the "sandwich" norm, part of the network ``f``).
The attention gets its rotary positions ``0..T-1`` and a causal (optionally sliding-window)
additive mask from the adapter; a length-1 sequence is position 0.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import attention_mask, position_ids, require_transformers, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter


class LlamaAdapter(ContextualBlock):
    """One unmodified Llama-style decoder layer ``(B, T, d) -> (B, T, d)`` in the decomposition.

    Args:
        layer: a ``LlamaDecoderLayer`` (or Mistral/Qwen2/Gemma/Gemma2 layer).
        rotary: the model's rotary embedding module, ``rotary(x, position_ids) -> (cos, sin)``.
    """

    def __init__(self, layer: nn.Module, rotary: nn.Module):
        super().__init__()
        self.layer = layer
        self.rotary = rotary
        sandwich = hasattr(layer, "pre_feedforward_layernorm")
        self.attn_norm = layer.post_attention_layernorm if sandwich else None
        self.mlp_norm = layer.pre_feedforward_layernorm if sandwich else layer.post_attention_layernorm
        self.out_norm = layer.post_feedforward_layernorm if sandwich else None
        self.window = getattr(layer.self_attn, "sliding_window", None)

    def decompose(self, x: torch.Tensor) -> Decomposition:
        x = x.to(self.layer.input_layernorm.weight.device)  # layers spread by device_map="auto"
        cos_sin = self.rotary(x, position_ids(x))
        mask = attention_mask(x.shape[1], x.dtype, x.device, window=self.window)
        a, _ = self.layer.self_attn(hidden_states=self.layer.input_layernorm(x),
                                    position_embeddings=cos_sin, attention_mask=mask)
        if self.attn_norm is not None:
            a = self.attn_norm(a)
        s = x + a
        return Decomposition(self.mlp_norm(s), s)

    def first_layers(self):
        mlp = self.layer.mlp
        return ((mlp.gate_proj.weight, mlp.gate_proj.bias), (mlp.up_proj.weight, mlp.up_proj.bias))

    def output(self, hs: Sequence[torch.Tensor], s: torch.Tensor | None) -> torch.Tensor:
        mlp = self.layer.mlp
        f = mlp.down_proj(mlp.act_fn(hs[0]) * hs[1])
        if self.out_norm is not None:
            f = self.out_norm(f)
        return s + f


def adapt_llama_lm(model: nn.Module) -> AdaptedLM:
    """``LlamaForCausalLM``-like model -> :class:`AdaptedLM` (embed, adapter stack, head)."""
    base = model.model
    stack = Stack([LlamaAdapter(layer, base.rotary_emb) for layer in base.layers])
    cap = getattr(model.config, "final_logit_softcapping", None)

    def head(h: torch.Tensor) -> torch.Tensor:
        logits = model.lm_head(base.norm(h.to(base.norm.weight.device)))
        return logits if cap is None else torch.tanh(logits / cap) * cap

    return AdaptedLM(model, stack, base.get_input_embeddings(), head)


for _model_type in ("llama", "mistral", "qwen2", "gemma", "gemma2"):
    register_model_adapter(_model_type, adapt_llama_lm)


def tiny_lm(kind: str, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random causal LM of ``kind`` ("llama", "gemma", "gemma2"): width 32, 2 layers,
    4 heads (2 key/value heads), vocabulary 64. Gemma 2 alternates sliding (window 4) and
    global attention and soft-caps its logits."""
    tf = require_transformers()
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                  initializer_range=0.2)
    if kind == "llama":
        config = tf.LlamaConfig(**common, mlp_bias=True, attention_bias=True)
        cls = tf.LlamaForCausalLM
    elif kind == "gemma":
        config = tf.GemmaConfig(**common)
        cls = tf.GemmaForCausalLM
    elif kind == "gemma2":
        config = tf.Gemma2Config(**common, sliding_window=4, query_pre_attn_scalar=8,
                                 attn_logit_softcapping=20.0, final_logit_softcapping=10.0)
        cls = tf.Gemma2ForCausalLM
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    return tiny_model(cls, config, seed=seed, dtype=dtype)


def _tiny_stack(kind: str):
    def factory(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> Stack:
        return adapt_llama_lm(tiny_lm(kind, seed=seed, dtype=dtype)).stack

    factory.__doc__ = f"Adapter stack of a tiny random {kind} model (width 32, 2 layers)."
    return factory


register_architecture("llama", _tiny_stack("llama"), tags=("attention", "pre_rms", "gated", "rotary"))
register_architecture("gemma", _tiny_stack("gemma"), tags=("attention", "pre_rms", "gated", "rotary"))
register_architecture("gemma2", _tiny_stack("gemma2"),
                      tags=("attention", "pre_rms", "gated", "rotary", "sandwich", "sliding_window"))
