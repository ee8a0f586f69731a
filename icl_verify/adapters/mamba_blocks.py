"""Mamba blocks (Mamba, Falcon-Mamba, Mamba-2): ``x + out_proj(mixer(N(x)))`` with an RMSNorm ``N``.

The contextual layer is everything of the mixer before ``out_proj`` (input projection, causal
convolution, selective scan, gating; Mamba-2 also its gated RMSNorm); the network is the single
dense matrix ``out_proj``::

    z = (input of out_proj at this position)                 (d_inner,)
    s = x                                                    residual (rounded to float32 if the config says so)
    out = s + (W z + b),   W = out_proj.weight  (d, d_inner)

``z`` is read off the unmodified mixer with a forward pre-hook on ``out_proj``. On CPU the
mixers run their torch implementations (the fused CUDA kernels are optional in transformers).
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import require_transformers, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter


class MambaAdapter(ContextualBlock):
    """One unmodified ``MambaBlock`` (or ``FalconMambaBlock``, ``Mamba2Block``) ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def decompose(self, x: torch.Tensor) -> Decomposition:
        x = x.to(self.layer.norm.weight.device)  # layers spread by device_map="auto"
        captured: list[torch.Tensor] = []
        hook = self.layer.mixer.out_proj.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.layer.mixer(self.layer.norm(x.to(self.layer.norm.weight.dtype)))
        finally:
            hook.remove()
        s = x
        if self.layer.residual_in_fp32:  # as the layer: the residual rounded to float32, then promoted
            s = x.to(torch.float32).to(torch.promote_types(x.dtype, torch.float32))
        return Decomposition(captured[0], s)

    def first_layers(self):
        out = self.layer.mixer.out_proj
        return ((out.weight, out.bias),)

    def output(self, hs, s):
        return s + hs[0]


def mamba_stack(model: nn.Module) -> Stack:
    """Adapter stack over the layers of a ``MambaModel`` (or ``FalconMambaModel``, ``Mamba2Model``)."""
    return Stack([MambaAdapter(layer) for layer in model.layers])


def adapt_mamba_lm(model: nn.Module) -> AdaptedLM:
    """``MambaForCausalLM``-like model -> :class:`AdaptedLM`: embeddings, adapter stack, final
    RMSNorm and ``lm_head``. The head keeps the stack's dtype (the model's own forward also
    rounds its logits to float32)."""
    base = model.backbone

    def head(h: torch.Tensor) -> torch.Tensor:
        return model.lm_head(base.norm_f(h.to(base.norm_f.weight.device)))

    return AdaptedLM(model, mamba_stack(base), base.get_input_embeddings(), head)


for _model_type in ("mamba", "falcon_mamba", "mamba2"):
    register_model_adapter(_model_type, adapt_mamba_lm)


def _mamba_config(tf, kind: str):
    if kind == "mamba":
        return tf.MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                              conv_kernel=3, time_step_rank=4, use_bias=True, residual_in_fp32=False,
                              initializer_range=0.2)
    if kind == "falcon_mamba":
        return tf.FalconMambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                    conv_kernel=3, time_step_rank=4, use_bias=True, residual_in_fp32=False,
                                    initializer_range=0.2)
    raise ValueError(f"unknown tiny Mamba kind {kind!r}")


def tiny_mamba(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``MambaModel``: width 16, inner width 32, state 4, 2 layers."""
    tf = require_transformers()
    return tiny_model(tf.MambaModel, _mamba_config(tf, "mamba"), seed=seed, dtype=dtype)


def tiny_mamba_lm(kind: str = "mamba", *, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``MambaForCausalLM`` (``kind="mamba"``) or ``FalconMambaForCausalLM``
    (``"falcon_mamba"``): width 16, inner width 32, state 4, 2 layers, vocabulary 64."""
    tf = require_transformers()
    cls = tf.MambaForCausalLM if kind == "mamba" else tf.FalconMambaForCausalLM
    return tiny_model(cls, _mamba_config(tf, kind), seed=seed, dtype=dtype)


def _mamba_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
    """A tiny random Mamba (width 16, 2 layers), adapted."""
    return adapt_mamba_lm(tiny_mamba_lm(seed=seed, dtype=dtype))


def _falcon_mamba_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
    """A tiny random Falcon-Mamba (width 16, 2 layers), adapted."""
    return adapt_mamba_lm(tiny_mamba_lm("falcon_mamba", seed=seed, dtype=dtype))


register_architecture("mamba", _mamba_stack, width=16, tags=("recurrent", "ssm", "residual"))
register_architecture("falcon_mamba", _falcon_mamba_stack, width=16, tags=("recurrent", "ssm", "residual"))
