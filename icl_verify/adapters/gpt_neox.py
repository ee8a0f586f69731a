"""GPT-NeoX layers, the parallel block of docs/theory.md §1 (``use_parallel_residual=True``)::

    out = x + Attn(LN_1(X)) + f(W LN_2(x) + b)

The network reads ``z = LN_2(x)``, the token alone: context reaches the output only through the
bypass ``s = x + Attn(LN_1(X))``. The decomposition is then exact and the update is
bypass-only: with the token itself as reference, ``z_t = z_r`` and ``dW = 0``. With
``use_parallel_residual=False`` the layer is an ordinary pre-LN block and adapts as such.
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import attention_mask, position_ids, require_transformers, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter


class GPTNeoXAdapter(ContextualBlock):
    """One unmodified ``GPTNeoXLayer`` ``(B, T, d) -> (B, T, d)``, parallel or sequential."""

    def __init__(self, layer: nn.Module, rotary: nn.Module):
        super().__init__()
        self.layer = layer
        self.rotary = rotary

    @property
    def parallel(self) -> bool:
        return bool(self.layer.use_parallel_residual)

    def decompose(self, x: torch.Tensor) -> Decomposition:
        mask = attention_mask(x.shape[1], x.dtype, x.device)
        a, _ = self.layer.attention(self.layer.input_layernorm(x), attention_mask=mask,
                                    position_embeddings=self.rotary(x, position_ids(x)))
        if self.parallel:
            return Decomposition(self.layer.post_attention_layernorm(x), a + x)
        s = a + x
        return Decomposition(self.layer.post_attention_layernorm(s), s)

    def first_layers(self):
        fc = self.layer.mlp.dense_h_to_4h
        return ((fc.weight, fc.bias),)

    def output(self, hs, s):
        mlp = self.layer.mlp
        return mlp.dense_4h_to_h(mlp.act(hs[0])) + s

    def extra_repr(self) -> str:
        return f"parallel={self.parallel}"


def adapt_gpt_neox_lm(model: nn.Module) -> AdaptedLM:
    """``GPTNeoXForCausalLM`` -> :class:`AdaptedLM`."""
    base = model.gpt_neox
    stack = Stack([GPTNeoXAdapter(layer, base.rotary_emb) for layer in base.layers])
    return AdaptedLM(model, stack, base.embed_in, lambda h: model.get_output_embeddings()(base.final_layer_norm(h)))


register_model_adapter("gpt_neox", adapt_gpt_neox_lm)


def tiny_gpt_neox(*, seed: int = 0, dtype: torch.dtype = torch.float64, parallel: bool = True) -> nn.Module:
    """A tiny random ``GPTNeoXForCausalLM``: width 32, 2 layers, 4 heads, partial rotary."""
    tf = require_transformers()
    config = tf.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=48, max_position_embeddings=128, initializer_range=0.2,
                              use_parallel_residual=parallel, bos_token_id=0, eos_token_id=0)
    return tiny_model(tf.GPTNeoXForCausalLM, config, seed=seed, dtype=dtype)


def _gpt_neox_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> Stack:
    """Adapter stack of a tiny random parallel-block GPT-NeoX (width 32, 2 layers)."""
    return adapt_gpt_neox_lm(tiny_gpt_neox(seed=seed, dtype=dtype)).stack


register_architecture("gpt_neox", _gpt_neox_stack, tags=("attention", "pre_ln", "parallel", "rotary"))
