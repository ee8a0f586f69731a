"""GPT-2 blocks: pre-LayerNorm, learned absolute positions (added to the embeddings, so not the
block's business), MLP with ``Conv1D`` weights stored ``(d_in, d_out)``.

Per position (docs/theory.md §1, pre-LN row)::

    s = x + Attn(LN_1(X)),   z = LN_2(s),   out = s + c_proj(act(W z + b))

with ``W = c_fc.weight^T`` ``(m, d)`` (the transpose of GPT-2's ``Conv1D`` layout).
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import attention_mask, require_transformers, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter


class GPT2Adapter(ContextualBlock):
    """One unmodified ``GPT2Block`` ``(B, T, d) -> (B, T, d)`` with a causal mask."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def decompose(self, x: torch.Tensor) -> Decomposition:
        mask = attention_mask(x.shape[1], x.dtype, x.device)
        a, _ = self.layer.attn(self.layer.ln_1(x), attention_mask=mask)
        s = x + a
        return Decomposition(self.layer.ln_2(s), s)

    def first_layers(self):
        c_fc = self.layer.mlp.c_fc
        return ((c_fc.weight.T, c_fc.bias),)

    def output(self, hs, s):
        mlp = self.layer.mlp
        return s + mlp.c_proj(mlp.act(hs[0]))


def adapt_gpt2_lm(model: nn.Module) -> AdaptedLM:
    """``GPT2LMHeadModel`` -> :class:`AdaptedLM`; ``embed`` adds the position embeddings."""
    base = model.transformer

    def embed(ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
        return base.wte(ids) + base.wpe(pos)

    return AdaptedLM(model, Stack([GPT2Adapter(b) for b in base.h]), embed,
                     lambda h: model.lm_head(base.ln_f(h)))


register_model_adapter("gpt2", adapt_gpt2_lm)


def tiny_gpt2(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``GPT2LMHeadModel``: width 32, 2 layers, 4 heads, vocabulary 64."""
    tf = require_transformers()
    config = tf.GPT2Config(vocab_size=64, n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0,
                           initializer_range=0.2)
    return tiny_model(tf.GPT2LMHeadModel, config, seed=seed, dtype=dtype)


def _gpt2_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> Stack:
    """Adapter stack of a tiny random GPT-2 (width 32, 2 layers)."""
    return adapt_gpt2_lm(tiny_gpt2(seed=seed, dtype=dtype)).stack


register_architecture("gpt2", _gpt2_stack, tags=("attention", "pre_ln"))
