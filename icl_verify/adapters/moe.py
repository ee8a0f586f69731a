"""Mixture-of-experts feed-forward (transformers 5.x layout): a top-k router and experts fused
into 3-D parameters, optionally a shared expert, with or without a sigmoid gate.

The router reads the same ``z`` ``(B, T, d)`` as the experts, so every matrix reading ``z`` is a
first matrix: the router ``W_r`` ``(E, d)``, each expert's ``gate_up_proj[e]`` ``(2m, d)`` (a view
of the fused ``(E, 2m, d)`` parameter), and for a shared expert its gate and up matrices and its
gate ``(1, d)``. An update then changes the router too, and the router logits of the updated
token equal the contextual ones: the same experts are chosen. Updates stay factored: one left
factor ``(..., m_k)`` per matrix, never a dense matrix per expert.

``rest(moe, hs)`` runs every expert on every position (``hs[1 + e]`` is expert ``e``'s
pre-activation) and weights them with the router's top-k weights (zero for experts not chosen),
the routing arithmetic of transformers (softmax in float32, top-k, optional renormalisation).

A router that computes its logits in float32 whatever the model's dtype (``router_float32``:
``F.linear(z.float(), W_r.float())``, DeepSeek-V3 and its descendants) is reproduced by
:meth:`MoE.own_pre_activations`, what an adapter block's own forward (the one the reconstruction
gate compares) reads; the claims read ``W_k z + b_k`` in the block's dtype, closer to the exact
map the theorem is about, and the routing arithmetic on both is the same float32 code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .ffn import Gated, dense_of, module_at


@dataclass(frozen=True)
class MoE:
    """Paths (relative to the decoder layer) and routing of a sparse MoE block.

    Attributes:
        block: the MoE module (its input is ``z``).
        router, experts: its router (``weight (E, d)``) and fused experts (``gate_up_proj
            (E, 2m, d)``, ``down_proj (E, d, m)``, ``act_fn``).
        renormalize: divide the top-k weights by their sum; ``None``: the router's
            ``norm_topk_prob``.
        cast_back: cast the top-k weights back to the logits' dtype (Mixtral keeps float32).
        shared, shared_gate: a shared expert (gated MLP) and its ``Linear(d, 1)`` sigmoid gate
            (``None``: the shared expert is added ungated).
        top_first: choose the top k by the float32 logits, then take the softmax over them
            (Granite-MoE), instead of the top k of the softmax over all experts.
        router_float32: the model computes the router logits in float32 whatever its dtype
            (``F.linear(z.float(), W_r.float())``).
    """

    block: str = "mlp"
    router: str = "gate"
    experts: str = "experts"
    renormalize: bool | None = None
    cast_back: bool = True
    shared: str | None = None
    shared_gate: str | None = None
    top_first: bool = False
    router_float32: bool = False

    def _shared(self) -> Gated | None:
        return None if self.shared is None else Gated(mlp=f"{self.block}.{self.shared}")

    def z_site(self, layer: nn.Module) -> nn.Module:
        return module_at(layer, self.block)

    def first_layers(self, layer: nn.Module):
        experts = module_at(layer, f"{self.block}.{self.experts}")
        out = [dense_of(module_at(layer, f"{self.block}.{self.router}"))]
        out += [(experts.gate_up_proj[e], None) for e in range(experts.gate_up_proj.shape[0])]
        shared = self._shared()
        if shared is not None:
            out += list(shared.first_layers(layer))
            if self.shared_gate is not None:
                out.append(dense_of(module_at(layer, f"{self.block}.{self.shared_gate}")))
        return tuple(out)

    def own_pre_activations(self, layer: nn.Module, z: torch.Tensor) -> list[torch.Tensor]:
        """``[W_k z + b_k]`` ``(..., m_k)`` as the model's own forward computes them: the router's
        product in float32 (kept in float32) when ``router_float32``, every other one in ``z``'s dtype."""
        firsts = self.first_layers(layer)
        hs = [F.linear(z, w, b) for w, b in firsts]
        if self.router_float32:
            w, b = firsts[0]
            hs[0] = F.linear(z.float(), w.float(), None if b is None else b.float())
        return hs

    def routing_weights(self, layer: nn.Module, logits: torch.Tensor,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
        """Top-k routing weights from router logits ``(..., E)``: ``(..., E)``, zero off the top k;
        ``cast_back`` casts them to ``dtype`` (the model's, default the logits')."""
        router = module_at(layer, f"{self.block}.{self.router}")
        dtype = logits.dtype if dtype is None else dtype
        if self.top_first:
            top, idx = torch.topk(logits.float(), router.top_k, dim=-1)
            top = F.softmax(top, dim=-1)
            top = top.to(dtype) if self.cast_back else top
            return torch.zeros_like(logits, dtype=top.dtype).scatter(-1, idx, top)
        probs = F.softmax(logits, dtype=torch.float, dim=-1)
        top, idx = torch.topk(probs, router.top_k, dim=-1)
        renorm = getattr(router, "norm_topk_prob", True) if self.renormalize is None else self.renormalize
        if renorm:
            top = top / top.sum(dim=-1, keepdim=True)
        if self.cast_back:
            top = top.to(dtype)
        return torch.zeros_like(probs.to(top.dtype)).scatter(-1, idx, top)

    def kinks(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """The router logits ``hs[0]`` ``(..., E)``: the chosen experts change where the k-th and
        (k+1)-th largest logits swap, so each logit's distance to that jump is half its gap to the
        boundary (a chosen one to the largest unchosen, an unchosen one to the smallest chosen);
        ``inf`` when every expert is chosen. The experts' pre-activations keep ``|h|``."""
        logits = hs[0].float()
        k = module_at(layer, f"{self.block}.{self.router}").top_k
        if k >= logits.shape[-1]:
            return {0: torch.full_like(logits, float("inf"))}
        top = torch.topk(logits, k + 1, dim=-1)
        last_in, first_out = top.values[..., k - 1:k], top.values[..., k:k + 1]
        chosen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top.indices[..., :k], True)
        return {0: torch.where(chosen, logits - first_out, last_in - logits) / 2}

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        experts = module_at(layer, f"{self.block}.{self.experts}")
        n = experts.gate_up_proj.shape[0]
        weights = self.routing_weights(layer, hs[0], hs[1].dtype)
        out = None
        for e in range(n):
            gate, up = hs[1 + e].chunk(2, dim=-1)
            y = F.linear(experts.act_fn(gate) * up, experts.down_proj[e]) * weights[..., e:e + 1]
            out = y if out is None else out + y
        shared = self._shared()
        if shared is not None:
            f_shared = shared.rest(layer, hs[1 + n: 3 + n])
            out = out + (f_shared if self.shared_gate is None else torch.sigmoid(hs[3 + n]) * f_shared)
        return out.to(hs[1].dtype)


@dataclass(frozen=True)
class SigmoidMoE(MoE):
    """Sigmoid routing with a score-correction bias (DeepSeek-V3, GLM-4.5, dots1, EXAONE MoE,
    MiniMax-M2): scores ``p = sigmoid(l)`` in float32; the experts are chosen by ``p + b``
    (``e_score_correction_bias`` of the router or of the block), within the ``topk_group``
    best of ``n_group`` groups (a group's score: the sum of its two best) when the router has
    groups; the weights are the chosen ``p``, divided by their sum (``renormalize``, default the
    router's ``norm_topk_prob``, else true) and times ``routed_scaling_factor``. A shared expert
    (``shared``) is added ungated unless ``shared_gate`` is set."""

    cast_back: bool = False

    def _router_setting(self, layer: nn.Module, name: str, default):
        router = module_at(layer, f"{self.block}.{self.router}")
        return getattr(router, name, getattr(module_at(layer, self.block), name, default))

    def routing_weights(self, layer: nn.Module, logits: torch.Tensor,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(..., E)`` float32 weights, zero off the chosen experts (``dtype`` is not read: the
        model multiplies its experts' outputs by the float32 weights)."""
        scores = logits.float().sigmoid()
        choice = scores + self._router_setting(layer, "e_score_correction_bias", 0.0)
        groups = self._router_setting(layer, "num_group", self._router_setting(layer, "n_group", 1)) or 1
        if groups > 1:
            e = scores.shape[-1]
            grouped = choice.reshape(choice.shape[:-1] + (groups, e // groups))
            best = torch.topk(grouped.topk(2, dim=-1)[0].sum(-1), k=self._router_setting(layer, "topk_group", 1),
                              dim=-1, sorted=False)[1]
            keep = torch.zeros(grouped.shape[:-1], dtype=torch.bool, device=scores.device).scatter(-1, best, True)
            choice = choice.masked_fill(~keep.repeat_interleave(e // groups, dim=-1), float("-inf"))
        k = self._router_setting(layer, "top_k", None)
        idx = torch.topk(choice, k, dim=-1, sorted=False)[1]
        top = scores.gather(-1, idx)
        renorm = self._router_setting(layer, "norm_topk_prob", True) if self.renormalize is None else self.renormalize
        scale = self._router_setting(layer, "routed_scaling_factor", None)
        if renorm:  # DeepSeek's routers (those with a scaling factor) guard the sum with 1e-20
            top = top / (top.sum(dim=-1, keepdim=True) + (0.0 if scale is None else 1e-20))
        if scale is not None:
            top = top * scale
        return torch.zeros_like(scores).scatter(-1, idx, top)

    def kinks(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """The chosen experts change where two choice scores ``p + b`` swap: half the gap of each
        to the top-k boundary, in choice units. The sigmoid's slope is at most 1/4, so this is at
        most a quarter of the logit's own distance: a conservative distance (group boundaries are
        not modelled)."""
        logits = hs[0].float()
        choice = logits.sigmoid() + self._router_setting(layer, "e_score_correction_bias", 0.0)
        return super().kinks(layer, [choice] + list(hs[1:]))


@dataclass(frozen=True)
class ClampedMoE(MoE):
    """gpt-oss: a router with a bias, the softmax over the top-k logits only, experts stored
    ``gate_up_proj (E, d, 2m)`` (first matrix ``W_e = gate_up_proj[e]^T``, a view) with a bias,
    gate and up interleaved and clamped at the experts' ``limit`` before the gated activation
    (the experts' own ``_apply_gate``), and a biased ``down_proj (E, m, d)``."""

    block: str = "mlp"
    router: str = "router"

    def first_layers(self, layer: nn.Module):
        experts = module_at(layer, f"{self.block}.{self.experts}")
        out = [dense_of(module_at(layer, f"{self.block}.{self.router}"))]
        out += [(experts.gate_up_proj[e].T, experts.gate_up_proj_bias[e]) for e in range(experts.gate_up_proj.shape[0])]
        return tuple(out)

    def routing_weights(self, layer: nn.Module, logits: torch.Tensor,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
        """Softmax over the ``top_k`` largest logits, in the logits' dtype; zero elsewhere."""
        top = torch.topk(logits, module_at(layer, f"{self.block}.{self.router}").top_k, dim=-1)
        weights = F.softmax(top.values, dim=-1, dtype=logits.dtype)
        return torch.zeros_like(logits).scatter(-1, top.indices, weights)

    def kinks(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        """The router's top-k boundary (:meth:`MoE.kinks`); for each expert, the clamps: a gate
        component's distance to ``limit``, an up component's to ``+-limit`` (and 0 for both)."""
        out = super().kinks(layer, hs)
        limit = module_at(layer, f"{self.block}.{self.experts}").limit
        for k, h in enumerate(hs[1:], start=1):
            dist = torch.minimum(h.abs(), (h - limit).abs())
            dist[..., 1::2] = torch.minimum(dist[..., 1::2], (h[..., 1::2] + limit).abs())
            out[k] = dist
        return out

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        experts = module_at(layer, f"{self.block}.{self.experts}")
        weights = self.routing_weights(layer, hs[0])
        out = None
        for e in range(experts.gate_up_proj.shape[0]):
            y = experts._apply_gate(hs[1 + e]) @ experts.down_proj[e] + experts.down_proj_bias[e]
            y = y * weights[..., e:e + 1]
            out = y if out is None else out + y
        return out.to(hs[0].dtype)


@dataclass(frozen=True)
class ScaledInputMoE(MoE):
    """Llama 4: every expert reads ``z`` scaled by its score ``sigmoid(l_e)`` for the top-k
    router logits and 0 for the others, ``gate, up = chunk(s_e (W_e z))`` with ``W_e =
    gate_up_proj[e]^T`` (a view of the ``(E, d, 2m)`` tensor), ``f = shared(z) + sum_e
    down_e(up * act(gate))``; the shared expert is a gated MLP with ``activation_fn``."""

    block: str = "feed_forward"
    router: str = "router"
    shared: str | None = "shared_expert"

    def _shared(self) -> Gated | None:
        return None if self.shared is None else Gated(mlp=f"{self.block}.{self.shared}", act="activation_fn")

    def first_layers(self, layer: nn.Module):
        experts = module_at(layer, f"{self.block}.{self.experts}")
        out = [dense_of(module_at(layer, f"{self.block}.{self.router}"))]
        out += [(experts.gate_up_proj[e].T, None) for e in range(experts.gate_up_proj.shape[0])]
        return tuple(out + list(self._shared().first_layers(layer)))

    def routing_weights(self, layer: nn.Module, logits: torch.Tensor,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
        """``sigmoid`` of the top-k logits (in float32, cast back), 0 for the other experts."""
        top = torch.topk(logits, module_at(layer, f"{self.block}.{self.router}").top_k, dim=-1)
        scores = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
        return torch.sigmoid(scores.float()).to(logits.dtype)

    def rest(self, layer: nn.Module, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        experts = module_at(layer, f"{self.block}.{self.experts}")
        n = experts.gate_up_proj.shape[0]
        scores = self.routing_weights(layer, hs[0])
        outs = []
        for e in range(n):
            gate, up = (hs[1 + e] * scores[..., e:e + 1]).chunk(2, dim=-1)
            outs.append((up * experts.act_fn(gate)) @ experts.down_proj[e])
        return self._shared().rest(layer, hs[1 + n:3 + n]) + torch.stack(outs).sum(dim=0)
