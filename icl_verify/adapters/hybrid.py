"""Hybrid decoder layers (Jamba, Bamba, Qwen3-Next, LFM2, Falcon-H1): each layer mixes positions
with attention, a recurrent mixer (Mamba, Mamba-2, gated DeltaNet, gated short convolution) or
both side by side (Falcon-H1), then runs a feed-forward network (a gated MLP or a mixture of
experts), both pre-RMSNorm.

Per position (docs/theory.md §1, pre-norm row; the same for every mixer kind)::

    s = x + M(N_1(X))          M: attention and/or the recurrent mixer, out projections included
    z = N_2(s)                 network input, read by every first matrix of the feed-forward
    out = s + f(W z + b)       f: gated MLP (gate, up) or MoE (router, experts, shared expert)

The mixer's own out projection is not a first matrix: it reads the mixed stream, but the layer
adds its output to the residual before ``N_2``, so the feed-forward's matrices are the first dense
operation on a normed, mixed ``z`` (as in a Llama layer).

``z`` and ``s`` are read off the unmodified layer's own forward with pre-hooks on the
feed-forward and its norm (the forward stops there). Attention layers get positions ``0..T-1``
(rotary ones where the model has them) and a causal additive mask; recurrent layers get no mask
(their torch implementations run on any device).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..blocks import ContextualBlock, Decomposition, Stack
from ..errors import UnsupportedModelError
from ..registry import Registry
from ._common import attention_mask, eager_experts, position_ids, require_transformers, run_until, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter
from .ffn import Gated, module_at, own_pre_activations
from .moe import MoE


@dataclass(frozen=True)
class HybridRecord:
    """Where a hybrid model type keeps its pieces (dotted attribute paths).

    Attributes:
        model_type: ``config.model_type``.
        ffn: feed-forward reader of a layer with a dense MLP (``Gated``).
        moe: feed-forward reader of a layer with a sparse MoE block (``MoE``), or ``None``.
        moe_block: the layer attribute whose class name ends in ``SparseMoeBlock`` on MoE layers.
        attention: the attention module of attention layers (absent on recurrent layers).
        ffn_norm: the norm ``N_2`` whose input is ``s``.
        layers, final_norm, rotary: paths in the causal LM (``rotary=None``: no positions).
        embed_scale, logit_scale: paths in the causal LM of scalars multiplying the token
            embeddings and the logits (muP multipliers), or ``None``.
    """

    model_type: str
    ffn: Any
    moe: Any = None
    moe_block: str = "mlp"
    attention: str = "self_attn"
    ffn_norm: str = "pre_ff_layernorm"
    layers: str = "model.layers"
    final_norm: str = "model.final_layernorm"
    rotary: str | None = None
    embed_scale: str | None = None
    logit_scale: str | None = None

    def reader(self, layer: nn.Module):
        """The feed-forward reader of ``layer`` (MoE or dense)."""
        block = getattr(layer, self.moe_block, None)
        if type(block).__name__.endswith("SparseMoeBlock"):
            if self.moe is None:
                raise UnsupportedModelError(f"{self.model_type}: a sparse MoE layer but no MoE reader in its record")
            return self.moe
        return self.ffn


@dataclass(frozen=True)
class SiluGated(Gated):
    """:class:`Gated` whose activation is SiLU written into the forward (no activation module)."""

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        return module_at(layer, f"{self.mlp}.{self.down}")(F.silu(hs[0]) * hs[1])


@dataclass(frozen=True)
class ScaledGated(Gated):
    """``f = c_d down((W_u z + b_u) * act(c_g (W_g z + b_g)))`` with the MLP's scalar multipliers
    ``gate_multiplier`` ``c_g`` and ``down_multiplier`` ``c_d`` (Falcon-H1)."""

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        mlp = module_at(layer, self.mlp)
        f = module_at(mlp, self.down)(hs[1] * module_at(mlp, self.act)(hs[0] * mlp.gate_multiplier))
        return f * mlp.down_multiplier


RECORDS: Registry[HybridRecord] = Registry("hybrid record")


class HybridAdapter(ContextualBlock):
    """One unmodified hybrid decoder layer ``(B, T, d) -> (B, T, d)``, either mixer kind.

    Args:
        record: the model type's :class:`HybridRecord`.
        layer: the decoder layer.
        rotary: the model's rotary module, or ``None``.
    """

    def __init__(self, record: HybridRecord, layer: nn.Module, rotary: nn.Module | None):
        super().__init__()
        self.record = record
        self.layer = layer
        self.rotary = rotary
        self.reader = record.reader(layer)
        self._params = set(inspect.signature(layer.forward).parameters)

    @property
    def kind(self) -> str:
        """``"attention"`` or ``"recurrent"``."""
        return "attention" if getattr(self.layer, self.record.attention, None) is not None else "recurrent"

    def _kwargs(self, x: torch.Tensor) -> dict:
        kw: dict[str, Any] = {"attention_mask": None}
        if "position_embeddings" in self._params:
            kw["position_embeddings"] = None
        if self.kind == "attention":
            kw["attention_mask"] = attention_mask(x.shape[1], x.dtype, x.device)
            pos = position_ids(x)
            if "position_ids" in self._params:
                kw["position_ids"] = pos
            if self.rotary is not None:
                kw["position_embeddings"] = self.rotary(x, pos)
        if "use_cache" in self._params:
            kw["use_cache"] = False
        return kw

    def decompose(self, x: torch.Tensor) -> Decomposition:
        x = x.to(next(self.layer.parameters()).device)  # layers spread by device_map="auto"
        z, got = run_until(self.reader.z_site(self.layer), lambda: self.layer(x, **self._kwargs(x)),
                           inputs={"s": module_at(self.layer, self.record.ffn_norm)})
        return Decomposition(z, got["s"])

    def first_layers(self):
        return self.reader.first_layers(self.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output ``(B, T, d)`` with the pre-activations in the model's own precision
        (:func:`~.ffn.own_pre_activations`)."""
        dec = self.decompose(x)
        return self.output(own_pre_activations(self.reader, self.layer, dec.z), dec.s)

    def kinks(self, hs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        own = getattr(self.reader, "kinks", None)
        return {} if own is None else own(self.layer, hs)

    def output(self, hs: Sequence[torch.Tensor], s: torch.Tensor | None) -> torch.Tensor:
        return s + self.reader.rest(self.layer, hs)

    def extra_repr(self) -> str:
        return f"model_type={self.record.model_type}, kind={self.kind}, ffn={type(self.reader).__name__}"


def adapt_hybrid_lm(model: nn.Module, record: HybridRecord | None = None) -> AdaptedLM:
    """A hybrid causal LM -> :class:`AdaptedLM`: token embeddings, adapter stack, final norm and
    ``lm_head`` (no copy of weights). A float64 model with fused experts is switched to
    transformers' eager loop over experts (the grouped kernels have no float64)."""
    record = RECORDS.get(model.config.model_type) if record is None else record
    eager_experts(model)
    rotary = None if record.rotary is None else module_at(model, record.rotary)
    stack = Stack([HybridAdapter(record, layer, rotary) for layer in module_at(model, record.layers)])
    norm = module_at(model, record.final_norm)
    embed_scale = None if record.embed_scale is None else module_at(model, record.embed_scale)
    logit_scale = None if record.logit_scale is None else module_at(model, record.logit_scale)

    def embed(ids: torch.Tensor) -> torch.Tensor:
        e = model.get_input_embeddings()(ids)
        return e if embed_scale is None else e * embed_scale

    def head(h: torch.Tensor) -> torch.Tensor:
        logits = model.get_output_embeddings()(norm(h.to(norm.weight.device)))
        return logits if logit_scale is None else logits * logit_scale

    return AdaptedLM(model, stack, embed, head)


def register_hybrid(record: HybridRecord, tiny, *, tags: tuple[str, ...] = ()) -> HybridRecord:
    """Register ``record`` for :func:`adapt_causal_lm` and a tiny random architecture built by
    ``tiny(*, seed, dtype) -> causal LM``."""
    RECORDS.add(record.model_type, record)
    register_model_adapter(record.model_type, lambda model: adapt_hybrid_lm(model, record))

    def factory(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
        return adapt_hybrid_lm(tiny(seed=seed, dtype=dtype), record)

    factory.__doc__ = f"A tiny random {record.model_type} (width 32, 4 layers), adapted."
    register_architecture(record.model_type, factory, tags=("hybrid", "pre_rms", "gated") + tuple(tags))
    return record


def tiny_jamba(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``JambaForCausalLM``: width 32, 4 layers alternating Mamba and attention
    (4 heads, 2 key/value heads, no positions), a dense MLP on even layers and a mixture of 4
    experts (top 2) on odd ones, Mamba state 4, vocabulary 64; torch Mamba path."""
    tf = require_transformers()
    config = tf.JambaConfig(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, attn_layer_period=2, attn_layer_offset=1,
                            expert_layer_period=2, expert_layer_offset=1, num_experts=4, num_experts_per_tok=2,
                            mamba_d_state=4, mamba_d_conv=3, mamba_expand=2, mamba_dt_rank=4,
                            initializer_range=0.2, pad_token_id=0)
    return tiny_model(tf.JambaForCausalLM, config, seed=seed, dtype=dtype)


def tiny_bamba(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``BambaForCausalLM``: width 32, Mamba-2 layers (4 heads of 16, state 4,
    chunks of 4) and a rotary attention layer, dense gated MLPs, vocabulary 64."""
    tf = require_transformers()
    config = tf.BambaConfig(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, attn_layer_indices=[1],
                            mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=4, mamba_d_conv=3,
                            mamba_expand=2, mamba_chunk_size=4, initializer_range=0.2, pad_token_id=0)
    return tiny_model(tf.BambaForCausalLM, config, seed=seed, dtype=dtype)


def tiny_qwen3_next(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``Qwen3NextForCausalLM``: width 32, gated DeltaNet, gated DeltaNet, gated
    attention (4 heads of 8, partial rotary), every layer a mixture of 4 experts (top 2, width
    16) with a gated shared expert except layer 0 (dense MLP), vocabulary 64."""
    tf = require_transformers()
    config = tf.Qwen3NextConfig(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                layer_types=["linear_attention", "linear_attention", "full_attention"],
                                linear_conv_kernel_dim=3, linear_key_head_dim=8, linear_value_head_dim=8,
                                linear_num_key_heads=2, linear_num_value_heads=4, num_experts=4,
                                num_experts_per_tok=2, moe_intermediate_size=16,
                                shared_expert_intermediate_size=16, mlp_only_layers=[0],
                                initializer_range=0.2, max_position_embeddings=128)
    return tiny_model(tf.Qwen3NextForCausalLM, config, seed=seed, dtype=dtype)


def tiny_lfm2(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``Lfm2ForCausalLM``: width 32, gated short convolution (kernel 3), rotary
    attention (4 heads of 8, QK norms), convolution; SiLU-gated MLP of width 48, vocabulary 64."""
    tf = require_transformers()
    config = tf.Lfm2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, layer_types=["conv", "full_attention", "conv"],
                           block_auto_adjust_ff_dim=False, conv_L_cache=3, initializer_range=0.2,
                           max_position_embeddings=128)
    return tiny_model(tf.Lfm2ForCausalLM, config, seed=seed, dtype=dtype)


def tiny_falcon_h1(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``FalconH1ForCausalLM``: width 32, 2 layers each running a Mamba-2 mixer
    (4 heads of 16, state 4, chunks of 4) and rotary attention (4 heads of 8) side by side, a
    gated MLP of width 48, and muP multipliers away from 1 (embeddings, keys, mixer inputs and
    outputs, MLP gate and down, logits); vocabulary 64."""
    tf = require_transformers()
    config = tf.FalconH1Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, mamba_d_ssm=64,
                               mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=4, mamba_d_conv=3,
                               mamba_chunk_size=4, mamba_rms_norm=True, lm_head_multiplier=0.7,
                               embedding_multiplier=1.3, mlp_multipliers=[0.8, 1.2], key_multiplier=0.9,
                               attention_out_multiplier=1.1, attention_in_multiplier=0.9,
                               ssm_multipliers=[1.1, 0.9, 1.2, 0.8, 1.05], ssm_in_multiplier=1.1,
                               ssm_out_multiplier=0.9, initializer_range=0.2, max_position_embeddings=128)
    return tiny_model(tf.FalconH1ForCausalLM, config, seed=seed, dtype=dtype)


JAMBA = register_hybrid(HybridRecord("jamba", Gated(mlp="feed_forward"),
                                     MoE(block="feed_forward", router="router", renormalize=False),
                                     moe_block="feed_forward"),
                        tiny_jamba, tags=("attention", "recurrent", "ssm", "moe"))
BAMBA = register_hybrid(HybridRecord("bamba", Gated(mlp="feed_forward"), rotary="model.rotary_emb"),
                        tiny_bamba, tags=("attention", "recurrent", "ssm", "rotary"))
QWEN3_NEXT = register_hybrid(HybridRecord("qwen3_next", Gated(), MoE(shared="shared_expert",
                                                                     shared_gate="shared_expert_gate"),
                                          ffn_norm="post_attention_layernorm", final_norm="model.norm",
                                          rotary="model.rotary_emb"),
                             tiny_qwen3_next, tags=("attention", "recurrent", "delta_rule", "moe", "rotary"))
LFM2 = register_hybrid(HybridRecord("lfm2", SiluGated(mlp="feed_forward", gate="w1", up="w3", down="w2"),
                                    ffn_norm="ffn_norm", final_norm="model.embedding_norm", rotary="model.rotary_emb"),
                       tiny_lfm2, tags=("attention", "recurrent", "convolution", "rotary"))
FALCON_H1 = register_hybrid(HybridRecord("falcon_h1", ScaledGated(mlp="feed_forward"), rotary="model.rotary_emb",
                                         embed_scale="model.embedding_multiplier",
                                         logit_scale="model.lm_head_multiplier"),
                            tiny_falcon_h1, tags=("attention", "recurrent", "ssm", "parallel_mixers", "rotary"))
