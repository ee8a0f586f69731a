"""RecurrentGemma (Griffin) residual blocks: a temporal block, recurrent (conv + RG-LRU) or
local sliding-window attention, then a gated MLP, both pre-RMSNorm.

Per position (docs/theory.md §1, pre-norm row; the same for both temporal block kinds)::

    s = x + Temporal(N_1(X)),   z = N_2(s),
    out = s + down(act(W_g z + b_g) * (W_u z + b_u))     first matrices: gate_proj, up_proj

Positions ``0..T-1`` go to the temporal block (rotary positions for attention, the RG-LRU's reset
at position 0 for the recurrence), with a causal sliding-window additive mask.
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import attention_mask, position_ids, require_transformers, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter


class RecurrentGemmaAdapter(ContextualBlock):
    """One unmodified ``RecurrentGemmaDecoderLayer`` ``(B, T, d) -> (B, T, d)``, either kind."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.window = getattr(layer.temporal_block, "sliding_window", None)

    @property
    def kind(self) -> str:
        """``"attention"`` or ``"recurrent"``."""
        return "attention" if hasattr(self.layer.temporal_block, "q_proj") else "recurrent"

    def decompose(self, x: torch.Tensor) -> Decomposition:
        x = x.to(self.layer.temporal_pre_norm.weight.device)  # layers spread by device_map="auto"
        mask = attention_mask(x.shape[1], x.dtype, x.device, window=self.window)
        a, _ = self.layer.temporal_block(self.layer.temporal_pre_norm(x), position_ids=position_ids(x),
                                         attention_mask=mask, use_cache=False)
        s = a + x
        return Decomposition(self.layer.channel_pre_norm(s), s)

    def first_layers(self):
        mlp = self.layer.mlp_block
        return ((mlp.gate_proj.weight, mlp.gate_proj.bias), (mlp.up_proj.weight, mlp.up_proj.bias))

    def output(self, hs, s):
        mlp = self.layer.mlp_block
        return mlp.down_proj(mlp.act_fn(hs[0]) * hs[1]) + s

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


def _config(tf):
    return tf.RecurrentGemmaConfig(
        num_hidden_layers=2, vocab_size=64, hidden_size=32, intermediate_size=96, num_attention_heads=4,
        num_key_value_heads=2, lru_width=32, attention_window_size=4, conv1d_width=3,
        block_types=("recurrent", "attention"), pad_token_id=0, eos_token_id=1, bos_token_id=2,
        w_init_variance_scale=1.0,
    )


def tiny_recurrent_gemma(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``RecurrentGemmaModel``: width 32, a recurrent block then a local-attention
    block (window 4), 4 heads, vocabulary 64."""
    tf = require_transformers()
    return tiny_model(tf.RecurrentGemmaModel, _config(tf), seed=seed, dtype=dtype)


def tiny_recurrent_gemma_lm(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``RecurrentGemmaForCausalLM`` with the configuration of
    :func:`tiny_recurrent_gemma` (soft-capped logits)."""
    tf = require_transformers()
    return tiny_model(tf.RecurrentGemmaForCausalLM, _config(tf), seed=seed, dtype=dtype)


def recurrent_gemma_stack(model: nn.Module) -> Stack:
    """Adapter stack over the layers of a ``RecurrentGemmaModel``."""
    return Stack([RecurrentGemmaAdapter(layer) for layer in model.layers])


def adapt_recurrent_gemma_lm(model: nn.Module) -> AdaptedLM:
    """``RecurrentGemmaForCausalLM`` -> :class:`AdaptedLM`: embeddings scaled by
    ``sqrt(d)`` (the model's bfloat16 constant, cast to the stack's dtype), adapter stack, final
    RMSNorm, ``lm_head`` and soft-capping ``cap * tanh(logits / cap)``."""
    base = model.model
    cap = model.config.logits_soft_cap

    def embed(ids: torch.Tensor) -> torch.Tensor:
        e = base.embed_tokens(ids)
        return e * base.normalizer.type(e.dtype)

    def head(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(model.lm_head(base.final_norm(h.to(base.final_norm.weight.device))) / cap) * cap

    return AdaptedLM(model, recurrent_gemma_stack(base), embed, head)


register_model_adapter("recurrent_gemma", adapt_recurrent_gemma_lm)


def _recurrent_gemma_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
    """A tiny random RecurrentGemma (recurrent block, then local attention), adapted."""
    return adapt_recurrent_gemma_lm(tiny_recurrent_gemma_lm(seed=seed, dtype=dtype))


register_architecture("recurrent_gemma", _recurrent_gemma_stack,
                      tags=("recurrent", "attention", "pre_rms", "gated", "sliding_window"))
