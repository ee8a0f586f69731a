"""Mamba-2 blocks: ``x + out_proj(GatedRMSNorm(scan(...), gate))`` after an RMSNorm.

In transformers' ``Mamba2Mixer`` the input projection of the normed token ``N(x_t)`` splits into
``gate`` (width ``d_inner``), the convolved stream ``x B C`` and the step sizes ``dt``; the
selective scan mixes the positions; then ``MambaRMSNormGated`` computes, per group of channels,
``w * rmsnorm(y * silu(gate))`` and ``out_proj`` maps it back to width ``d``. The gated norm is
not a dense operation, so the first dense matrix reading the mixed stream is ``out_proj``::

    z = w * rmsnorm_groups(scan_t * silu(gate_t))           (d_inner,)   the input of out_proj
    s = x                                                   residual (float32 if the config says so)
    out = s + (W z + b),   W = out_proj.weight  (d, d_inner)

The contextual layer is everything before ``out_proj`` (the gate depends on ``x_t`` alone, the
scan on the prefix). The block is a Mamba block (same ``norm``/``mixer``/``out_proj`` layout), so
:class:`~icl_verify.adapters.mamba_blocks.MambaAdapter` wraps it; its gated norm computes in float32
inside the mixer, which the decomposition reproduces exactly since ``z`` is read off the mixer.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import require_transformers, tiny_model
from ._registry import AdaptedLM, register_architecture
from .mamba_blocks import adapt_mamba_lm


def tiny_mamba2_lm(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``Mamba2ForCausalLM``: width 16, inner width 32 (4 heads of 8), 2 groups,
    state 4, scan chunks of 4 positions (so a 9-token input crosses chunk boundaries), 2 layers,
    vocabulary 64."""
    tf = require_transformers()
    config = tf.Mamba2Config(vocab_size=64, hidden_size=16, num_heads=4, head_dim=8, n_groups=2, state_size=4,
                             num_hidden_layers=2, expand=2, conv_kernel=3, chunk_size=4, use_bias=True,
                             residual_in_fp32=False, initializer_range=0.2)
    return tiny_model(tf.Mamba2ForCausalLM, config, seed=seed, dtype=dtype)


def _mamba2_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
    """A tiny random Mamba-2 (width 16, 2 layers), adapted."""
    return adapt_mamba_lm(tiny_mamba2_lm(seed=seed, dtype=dtype))


register_architecture("mamba2", _mamba2_stack, width=16, tags=("recurrent", "ssm", "residual", "gated_norm"))
