"""Feed-forward readers: where a layer's network keeps its first dense matrices, and the rest of
the network as a function of their pre-activations ``hs[k] = W_k z + b_k`` ``(B, T, m_k)``.

Every reader is a frozen record of module paths relative to the decoder layer; it provides
``z_site(layer)`` (the module whose first input is ``z``), ``first_layers(layer)`` (``W_k`` as
views of the real parameters, ``(m_k, d)``) and ``rest(layer, hs) -> f`` ``(B, T, d)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def module_at(root: nn.Module, path: str) -> nn.Module:
    """The submodule (or attribute) of ``root`` at the dotted ``path`` (``""``: ``root``)."""
    return functools.reduce(getattr, path.split("."), root) if path else root


def dense_of(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W (m, d), b (m,) or None)`` of a ``Linear`` or of GPT-2's ``Conv1D`` (stored ``(d, m)``:
    ``W`` is its transpose, a view of the same parameter)."""
    if type(module).__name__ == "Conv1D":
        return module.weight.T, module.bias
    return module.weight, getattr(module, "bias", None)


def own_pre_activations(reader, layer: nn.Module, z: torch.Tensor) -> list[torch.Tensor]:
    """The first pre-activations ``W_k z + b_k`` ``(..., m_k)`` as the model's own forward computes
    them: the reader's ``own_pre_activations`` where it has one (a router computing in float32),
    else every product in ``z``'s dtype."""
    own = getattr(reader, "own_pre_activations", None)
    return [F.linear(z, w, b) for w, b in reader.first_layers(layer)] if own is None else own(layer, z)


@dataclass(frozen=True)
class Gated:
    """``f = down(act(W_g z + b_g) * (W_u z + b_u))``; first matrices: gate, up."""

    mlp: str = "mlp"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    act: str = "act_fn"

    def z_site(self, layer: nn.Module) -> nn.Module:
        return module_at(layer, f"{self.mlp}.{self.gate}")

    def first_layers(self, layer: nn.Module):
        mlp = module_at(layer, self.mlp)
        return (dense_of(module_at(mlp, self.gate)), dense_of(module_at(mlp, self.up)))

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        mlp = module_at(layer, self.mlp)
        return module_at(mlp, self.down)(module_at(mlp, self.act)(hs[0]) * hs[1])


@dataclass(frozen=True)
class FusedGated:
    """``gate, up = chunk(W z + b, 2)``, ``f = down(up * act(gate))``; one first matrix holding
    gate and up stacked (Phi-3, GLM)."""

    mlp: str = "mlp"
    gate_up: str = "gate_up_proj"
    down: str = "down_proj"
    act: str = "activation_fn"

    def z_site(self, layer: nn.Module) -> nn.Module:
        return module_at(layer, f"{self.mlp}.{self.gate_up}")

    def first_layers(self, layer: nn.Module):
        return (dense_of(module_at(layer, f"{self.mlp}.{self.gate_up}")),)

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        mlp = module_at(layer, self.mlp)
        gate, up = hs[0].chunk(2, dim=-1)
        return module_at(mlp, self.down)(up * module_at(mlp, self.act)(gate))


@dataclass(frozen=True)
class Plain:
    """``f = second(act(W z + b))``; paths relative to the layer (BERT keeps the two matrices in
    different submodules)."""

    first: str = "mlp.fc1"
    act: str = "mlp.act"
    second: str = "mlp.fc2"

    def z_site(self, layer: nn.Module) -> nn.Module:
        return module_at(layer, self.first)

    def first_layers(self, layer: nn.Module):
        return (dense_of(module_at(layer, self.first)),)

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        return module_at(layer, self.second)(module_at(layer, self.act)(hs[0]))


@dataclass(frozen=True)
class OwnForward:
    """``f = network(z)`` computed by the network module's own forward, with the outputs of its
    first matrices replaced by ``hs`` (whatever follows them, activations, sub-norms, clamps,
    multipliers, is the model's own code). ``first``: paths, relative to the network module, of
    the ``Linear``/``Conv1D`` modules reading its input ``z``, in call order."""

    mlp: str = "mlp"
    first: tuple[str, ...] = ()

    def z_site(self, layer: nn.Module) -> nn.Module:
        return module_at(layer, self.mlp)

    def first_layers(self, layer: nn.Module):
        mlp = module_at(layer, self.mlp)
        return tuple(dense_of(module_at(mlp, p)) for p in self.first)

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The network's output ``(..., d)`` for pre-activations ``hs[k]`` ``(..., m_k)``, run as
        ``(N, 1, .)`` sequences of one position (modules that read ``(B, T, d)`` shapes accept it;
        the network is position-wise)."""
        mlp = module_at(layer, self.mlp)
        firsts = [module_at(mlp, p) for p in self.first]
        width = dense_of(firsts[0])[0].shape[1]
        lead = hs[0].shape[:-1]
        flat = [h.reshape(-1, 1, h.shape[-1]) for h in hs]
        handles = [m.register_forward_hook(lambda _m, _args, _out, h=h: h) for m, h in zip(firsts, flat)]
        try:  # the input is never read: every matrix reading it returns its pre-activation from hs
            out = mlp(flat[0].new_zeros(flat[0].shape[:-1] + (width,)))
        finally:
            for handle in handles:
                handle.remove()
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.reshape(lead + out.shape[-1:])
