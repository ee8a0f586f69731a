"""Mamba blocks: ``x + out_proj(scan(...) * act(gate))`` after an RMSNorm.

The contextual layer is everything of the mixer before ``out_proj`` (input projection, causal
convolution, selective scan, gating); the network is the single dense matrix ``out_proj``::

    z = (gated scan output of the mixer at this position)    (d_inner,)
    s = x                                                    residual (rounded to float32 if the config says so)
    out = s + (W z + b),   W = out_proj.weight  (d, d_inner)

``z`` is read off the unmodified mixer with a forward pre-hook on ``out_proj``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ._common import require_transformers, tiny_model
from ._registry import register_architecture


class MambaAdapter(ContextualBlock):
    """One unmodified ``MambaBlock`` ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def decompose(self, x: torch.Tensor) -> Decomposition:
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


def tiny_mamba(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``MambaModel``: width 16, inner width 32, state 4, 2 layers."""
    tf = require_transformers()
    config = tf.MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                            conv_kernel=3, time_step_rank=4, use_bias=True, residual_in_fp32=False,
                            initializer_range=0.2)
    return tiny_model(tf.MambaModel, config, seed=seed, dtype=dtype)


def mamba_stack(model: nn.Module) -> Stack:
    """Adapter stack over the layers of a ``MambaModel``."""
    return Stack([MambaAdapter(layer) for layer in model.layers])


def _mamba_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> Stack:
    """Adapter stack of a tiny random Mamba (width 16, 2 layers)."""
    return mamba_stack(tiny_mamba(seed=seed, dtype=dtype))


register_architecture("mamba", _mamba_stack, width=16, tags=("recurrent", "ssm", "residual"))
