"""Nemotron-H blocks: one mixer per block, ``x + M(N(x))`` with an RMSNorm ``N``; the mixer is
a Mamba-2 mixer, an attention (no positions), or an MLP.

The first dense operation on the mixed stream is the mixer's own output projection for the
contextual kinds, and the MLP's up projection (reading the token alone) otherwise::

    Mamba-2    z = input of mixer.out_proj (gated, normed scan output)   out = s + W z + b
    attention  z = input of mixer.o_proj (the heads' weighted values)    out = s + W z + b
    MLP        z = N(x) (no context: dW = 0, ds = 0)                     out = s + down(act(W z + b))
    s = x

``z`` is read off the unmodified block's forward with a pre-hook (the forward stops there).
Mixture-of-experts blocks (grouped top-k router with a score-correction bias) have no reader:
:class:`~icl_verify.errors.UnsupportedModelError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ..errors import UnsupportedModelError
from ._common import attention_mask, require_transformers, run_until, tiny_model
from ._registry import AdaptedLM, register_architecture, register_model_adapter
from .ffn import Plain, dense_of, module_at


@dataclass(frozen=True)
class Projection:
    """``f = W z + b``: a single dense matrix at ``path`` (relative to the block)."""

    path: str

    def z_site(self, layer: nn.Module) -> nn.Module:
        return module_at(layer, self.path)

    def first_layers(self, layer: nn.Module):
        return (dense_of(module_at(layer, self.path)),)

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        return hs[0]


READERS = {
    "linear_attention": Projection("mixer.out_proj"),
    "full_attention": Projection("mixer.o_proj"),
    "mlp": Plain(first="mixer.up_proj", act="mixer.act_fn", second="mixer.down_proj"),
}


class NemotronHAdapter(ContextualBlock):
    """One unmodified ``NemotronHBlock`` ``(B, T, d) -> (B, T, d)``, any non-MoE mixer kind."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.kind = layer.block_type
        if self.kind not in READERS:
            raise UnsupportedModelError(
                f"nemotron_h block of kind {self.kind!r}: only {sorted(READERS)} blocks have a reader "
                "(its grouped top-k router with a score-correction bias is not described)")
        self.reader = READERS[self.kind]

    def decompose(self, x: torch.Tensor) -> Decomposition:
        x = x.to(self.layer.norm.weight.device)  # layers spread by device_map="auto"
        mask = attention_mask(x.shape[1], x.dtype, x.device) if self.kind == "full_attention" else None
        z, _ = run_until(self.reader.z_site(self.layer),
                         lambda: self.layer(x, attention_mask=mask, use_cache=False))
        return Decomposition(z, x)

    def first_layers(self):
        return self.reader.first_layers(self.layer)

    def output(self, hs: Sequence[torch.Tensor], s: torch.Tensor | None) -> torch.Tensor:
        return s + self.reader.rest(self.layer, hs)

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


def adapt_nemotron_h_lm(model: nn.Module) -> AdaptedLM:
    """``NemotronHForCausalLM`` -> :class:`AdaptedLM`: embeddings, adapter stack, final RMSNorm and
    ``lm_head``."""
    base = model.model
    stack = Stack([NemotronHAdapter(layer) for layer in base.layers])

    def head(h: torch.Tensor) -> torch.Tensor:
        return model.lm_head(base.norm_f(h.to(base.norm_f.weight.device)))

    return AdaptedLM(model, stack, base.get_input_embeddings(), head)


register_model_adapter("nemotron_h", adapt_nemotron_h_lm)


def tiny_nemotron_h(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A tiny random ``NemotronHForCausalLM``: width 32, blocks Mamba-2 (4 heads of 16, state 4,
    chunks of 4), MLP (relu^2, width 48), attention (4 heads of 8), MLP; vocabulary 64."""
    tf = require_transformers()
    config = tf.NemotronHConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                layers_block_type=["linear_attention", "mlp", "full_attention", "mlp"],
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, ssm_state_size=4,
                                mamba_num_heads=4, mamba_head_dim=16, n_groups=2, conv_kernel=3, expand=2,
                                chunk_size=4, initializer_range=0.2)
    return tiny_model(tf.NemotronHForCausalLM, config, seed=seed, dtype=dtype)


def _nemotron_h_stack(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
    """A tiny random Nemotron-H (width 32, 4 blocks), adapted."""
    return adapt_nemotron_h_lm(tiny_nemotron_h(seed=seed, dtype=dtype))


register_architecture("nemotron_h", _nemotron_h_stack,
                      tags=("hybrid", "attention", "recurrent", "ssm", "residual", "pre_rms"))
