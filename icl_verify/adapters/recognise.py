"""Structural recognition: a :class:`~icl_verify.adapters.LayerRecord` inferred from a model's
module tree and one probe forward, for a model type with no record.

From the module tree: the decoder layer list (the shallowest ``ModuleList`` of
``num_hidden_layers`` modules), the final norm (the last norm outside it), each layer's
attention (a child named ``*attn*``/``*attention*``) and network (a child named ``mlp``,
``feed_forward``, ``ffn``, ...). From the probe (first layer, hooks only): the first matrices,
the ``Linear``/``Conv1D`` modules of the network reading the network's own input ``z``; then the
wiring, the one of these that reproduces the layer's output ``y`` from its input ``x``::

    sequential   z = B(s) for a norm B of the layer:   y = s + f   or   y = s + N(f)
    no pre-norm  s = z:                                  y = z + N(f)
    parallel     z = B(x):                               y = x + a + f     (a: the attention's output)
    post         s = z:                                  y = N(z + f)

The network is read by :class:`~icl_verify.adapters.ffn.OwnForward` (its own forward from the
first matrices' outputs) and each layer is called with the model's own arguments
(``own_calls``). A record is only a proposal: :func:`~icl_verify.adapters.adapt_causal_lm`
accepts it when the reconstruction gate passes. Whatever is not found is an
:class:`~icl_verify.errors.UnsupportedModelError` naming the part.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ReconstructionError, UnsupportedModelError
from ._common import eager_experts, run_until
from .ffn import OwnForward, Plain, module_at, own_pre_activations
from .moe import ClampedMoE, MoE, ScaledInputMoE, SigmoidMoE
from .gate import _gap, check_reconstruction, gate_tolerance, probe_ids
from .records import LayerRecord

NETWORKS = ("mlp", "feed_forward", "ffn", "ffw", "block_sparse_moe", "moe", "feedforward", "mlp_block")
"""Names of a layer's network child, in order of preference."""

ATTENTION = re.compile(r"attn|attention")


def _is_norm(module: nn.Module) -> bool:
    """A LayerNorm or RMSNorm (by type, or a class name ending in ``Norm``)."""
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.lower().endswith("norm")


def _dense(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def layer_list(model: nn.Module) -> str:
    """Path of the decoder layers: the shallowest ``ModuleList`` of ``num_hidden_layers`` modules."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = getattr(config, "num_hidden_layers", None)
    found = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n and n]
    if not found:
        raise UnsupportedModelError(f"{_kind(model)}: no list of its {n} decoder layers in the module tree")
    return min(found, key=lambda name: name.count("."))


def final_norm(model: nn.Module, layers: str, head: str | None = None) -> str | None:
    """Path of the last norm registered outside the decoder layers, the embeddings and the head
    module ``head``, or ``None``."""
    inside = tuple(p + "." for p in (layers, head) if p)
    names = [name for name, m in model.named_modules()
             if _is_norm(m) and not name.startswith(inside) and "embed" not in name and name]
    return names[-1] if names else None


def _kind(model: nn.Module) -> str:
    return f"{type(model).__name__} (model type {getattr(model.config, 'model_type', None)!r})"


def _children(layer: nn.Module) -> tuple[str | None, str | None]:
    """``(attention, network)`` child names of a decoder layer (network ``None``: its matrices are
    the layer's own children, as in OPT)."""
    names = [n for n, _ in layer.named_children()]
    attention = next((n for n, m in layer.named_children() if ATTENTION.search(n) and not _is_norm(m)), None)
    return attention, next((n for n in NETWORKS if n in names), None)


def _probe(model: nn.Module, layers: nn.ModuleList, attention: str | None, network: str | None,
           index: int = 0) -> dict[str, Any]:
    """Tensors of the first layer on a probe forward: its input ``x`` and output ``y``, the
    network's input ``z`` and output ``f`` (no network module: the first dense child's input and
    the last one's output), each dense module's input and output (in call order), each norm
    child's input and output, the attention's first output ``a``."""
    layer = layers[index]
    net = layer if network is None else getattr(layer, network)
    denses = ([(n, m) for n, m in layer.named_children() if _dense(m)] if network is None
              else [(n, m) for n, m in net.named_modules() if _dense(m)])
    got: dict[str, Any] = {"dense": {}, "norms": {}}
    hooks = []

    def keep(key, sub=None):
        def hook(_m, args, kwargs, out):
            x = args[0] if args else next(iter(kwargs.values()))
            y = out[0] if isinstance(out, (tuple, list)) else out
            (got if sub is None else got[sub])[key] = (x, y)
        return hook

    hooks.append(layer.register_forward_hook(keep("layer"), with_kwargs=True))
    if network is not None:
        hooks.append(net.register_forward_hook(keep("network"), with_kwargs=True))
    if attention is not None:
        hooks.append(getattr(layer, attention).register_forward_hook(keep("attention"), with_kwargs=True))
    for name, m in denses:
        hooks.append(m.register_forward_hook(keep(name, "dense"), with_kwargs=True))
    for name, m in layer.named_children():
        if _is_norm(m):
            hooks.append(m.register_forward_hook(keep(name, "norms"), with_kwargs=True))
    try:
        with torch.no_grad():
            run_until(layers[index + 1] if len(layers) > index + 1 else nn.Identity(),
                      lambda: model(input_ids=probe_ids(model, t=6)[:1], use_cache=False))
    finally:
        for h in hooks:
            h.remove()
    if network is None and got["dense"]:
        called = list(got["dense"].values())
        got["network"] = (called[0][0], called[-1][1])
    if "layer" not in got or "network" not in got:
        raise UnsupportedModelError("the probe forward never reached the first decoder layer's network")
    return got


def _reader(layer: nn.Module, network: str | None, got: dict[str, Any]):
    """The network reader: :class:`OwnForward` of the network module, or (no network module) a
    :class:`Plain` of the layer's two dense children and its activation child."""
    z = got["network"][0]
    first = tuple(name for name, (inp, _) in got["dense"].items() if inp.shape == z.shape and torch.equal(inp, z))
    if network is not None and first:
        return OwnForward(network, first)
    if network is None and len(got["dense"]) == 2 and len(first) == 1:
        acts = [n for n, m in layer.named_children() if "act" in n.lower() or "activation" in type(m).__name__.lower()]
        if len(acts) == 1:
            return Plain(first[0], acts[0], list(got["dense"])[-1])
    where = "the layer's children" if network is None else f"the network {network!r}"
    kinds = sorted({type(m).__name__ for m in (layer if network is None else getattr(layer, network)).modules()})
    raise UnsupportedModelError(f"no dense first matrix reading the network's input z in {where} "
                                f"(its modules: {', '.join(kinds[:8])})")


MULTIPLIERS = ("residual_multiplier",)
"""Config attributes that may scale the network's output before the residual (Granite)."""


def _wiring(got: dict[str, Any], layer: nn.Module, attention: str | None, config: Any) -> dict[str, Any]:
    """The record fields of the wiring that reproduces the probed layer's output (module
    docstring); a sequential ``y = s + c f`` with ``c`` a config multiplier counts too."""
    x, y = got["layer"]
    z, f = got["network"]
    tol = 8 * gate_tolerance(1, y.shape[-1], y.dtype)
    z, f = z.reshape(x.shape[:-1] + z.shape[-1:]), f.reshape(y.shape)  # OPT flattens (B, T) inside the layer
    near = lambda a, b: a.numel() == b.numel() and _gap(a.reshape(b.shape), b) <= tol  # noqa: E731
    norms = got["norms"]
    apply = {n: (lambda t, n=n: getattr(layer, n)(t)) for n in norms}
    for b, (s, out) in norms.items():
        if near(out, z):
            if near(s + f, y):
                return dict(bypass=b)
            for name in (m for m in MULTIPLIERS if isinstance(getattr(config, m, None), (int, float))):
                if near(s + getattr(config, name) * f, y):
                    return dict(bypass=b, ffn_multiplier=name)
            for n in apply:
                if n != b and near(s + apply[n](f), y):
                    return dict(bypass=b, post_ffn_norm=n)
            if attention is not None and "attention" in got and near(s, x) and near(x + got["attention"][1] + f, y):
                return dict(wiring="parallel", attention=attention)
    for n in apply:
        if near(z + apply[n](f), y):
            return dict(bypass=None, post_ffn_norm=n)
        if near(apply[n](z + f), y):
            return dict(wiring="post", bypass=None, post_ffn_norm=n)
    raise UnsupportedModelError("the decoder layer's output is none of s + f, s + N(f), x + a + f, N(s + f) "
                                f"for its norms ({', '.join(norms) or 'none'}) and its network's output f")


def _has_experts(layer: nn.Module, network: str | None) -> bool:
    experts = None if network is None else getattr(getattr(layer, network), "experts", None)
    return experts is not None and hasattr(experts, "gate_up_proj")


def layer_width(layer: nn.Module, network: str) -> int:
    """The width ``d`` of the network's input: the in-features of the router's weight."""
    block = getattr(layer, network)
    router = next(getattr(block, n) for n in ("gate", "router") if hasattr(block, n))
    return router.weight.shape[-1]


def _moe_readers(layer: nn.Module, network: str) -> list[MoE]:
    """Readers of a mixture of experts with fused ``(E, 2m, d)`` experts and a softmax top-k router
    (child ``gate`` or ``router`` with ``weight`` and ``top_k``), an optional shared expert (with
    a sigmoid gate if the block has ``shared_expert_gate``), every choice of renormalisation and
    of the weights' dtype; sigmoid routing where there is a score-correction bias; gpt-oss's
    clamped experts where the experts have a ``limit`` and their own ``_apply_gate``; Llama 4's
    score-scaled inputs where the experts are stored ``(E, d, 2m)`` beside a shared expert. Sigmoid
    and softmax routers are read with their logits computed in float32 (as DeepSeek-V3's descendants
    do whatever the model's dtype) and in the model's dtype; the gate tells them apart."""
    block = getattr(layer, network)
    router = next((n for n in ("gate", "router") if hasattr(getattr(block, n, None), "top_k")), None)
    if router is None:
        raise UnsupportedModelError(f"the mixture of experts {network!r} has no top-k router child with a weight")
    if hasattr(block.experts, "_apply_gate") and hasattr(block.experts, "limit"):
        return [ClampedMoE(block=network, router=router)]
    if block.experts.gate_up_proj.shape[1] == layer_width(layer, network) and hasattr(block, "shared_expert"):
        return [ScaledInputMoE(block=network, router=router)]
    shared = next((n for n in ("shared_expert", "shared_experts") if hasattr(block, n)), None)
    shared_gate = "shared_expert_gate" if hasattr(block, "shared_expert_gate") else None
    if any(hasattr(m, "e_score_correction_bias") for m in (block, getattr(block, router))):
        return [SigmoidMoE(block=network, router=router, shared=shared, shared_gate=shared_gate, router_float32=f)
                for f in (True, False)]
    return [MoE(block=network, router=router, renormalize=r, cast_back=c, shared=shared, shared_gate=shared_gate,
                top_first=t, router_float32=f) for f in (False, True) for t in (False, True)
            for r in ((None, True, False) if not t else (None,)) for c in (True, False)]


BERT_FFN = Plain("intermediate.dense", "intermediate.intermediate_act_fn", "output.dense")
"""The network of BERT and its descendants: ``f = output.dense(act(intermediate.dense(z)))``."""


def _bert_like(layer: nn.Module) -> list[dict]:
    """Wirings of a BERT-like layer: post-LN (``y = output.LayerNorm(z + f)``), then pre-LN with
    each norm outside the attention as the one producing ``z`` (``y = s + f``)."""
    pre = [dict(bypass=n) for n, m in layer.named_modules() if _is_norm(m) and not n.startswith("attention")]
    return [dict(wiring="post", bypass=None, post_ffn_norm="output.LayerNorm")] + pre


def own_head(model: nn.Module) -> str | None:
    """The top-level module holding the output embeddings when it is more than them (BERT's
    ``cls``, RoBERTa's ``lm_head``): its forward is the whole head. ``None`` otherwise."""
    out = model.get_output_embeddings()
    name = next((n for n, m in model.named_modules() if m is out), None)
    return None if name is None or "." not in name else name.split(".")[0]


def network_of(model: nn.Module, layer: nn.Module) -> None:
    """:class:`UnsupportedModelError` unless ``layer`` holds a network recognition can read: a
    BERT-like ``intermediate``/``output`` pair, a network child, or dense children of its own."""
    names = {n for n, _ in layer.named_children()}
    if {"intermediate", "output"} <= names or _children(layer)[1] is not None:
        return
    if not any(_dense(m) for _, m in layer.named_children()):
        raise UnsupportedModelError(f"{_kind(model)}: no feed-forward network among its decoder layer's children "
                                    f"({', '.join(sorted(names))})")


def recognise(model: nn.Module) -> list[LayerRecord]:
    """Records of ``model``'s layout inferred from its module tree and probe forwards (module
    docstring), most likely first (several when a mixture of experts' routing details are not
    visible in its modules); :class:`UnsupportedModelError` naming the part not recognised."""
    eager_experts(model)
    layers_path = layer_list(model)
    layers = module_at(model, layers_path)
    head = own_head(model)
    common = dict(layers=layers_path, final_norm=final_norm(model, layers_path, head), rotary=None, head=head,
                  own_calls=True)
    if {"intermediate", "output"} <= {n for n, _ in layers[0].named_children()}:
        return [LayerRecord(model.config.model_type, BERT_FFN, **common, **w) for w in _bert_like(layers[0])]
    try:
        attention, network = _children(layers[0])
        got = _probe(model, layers, attention, network)
        wiring = _wiring(got, layers[0], attention, model.config)
        moe = [i for i, layer in enumerate(layers) if _has_experts(layer, network)]
        dense = next((i for i in range(len(layers)) if i not in moe), None)
        ffn = None if dense is None else _reader(layers[dense], network, got if dense == 0 else
                                                  _probe(model, layers, attention, network, dense))
        readers = [ffn] if not moe else [m if ffn is None else ByLayer(ffn, m)
                                           for m in _moe_readers(layers[moe[0]], network)]
        by_class = _wiring_by_class(model, layers, wiring)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{_kind(model)} is not recognised: {exc}") from None
    except (RuntimeError, AttributeError, TypeError, IndexError, KeyError, ValueError) as exc:
        line = (str(exc).strip().splitlines() or [""])[0]
        raise UnsupportedModelError(f"{_kind(model)} is not recognised: probing its first layers failed "
                                    f"({type(exc).__name__}: {line})") from exc
    return [LayerRecord(model.config.model_type, r, **common, **wiring, by_class=by_class) for r in readers]


def _wiring_by_class(model: nn.Module, layers: nn.ModuleList, first: dict[str, Any]) -> tuple:
    """``((class name, wiring fields), ...)`` for the layer classes after the first layer's whose
    probed wiring differs from ``first`` (hybrids mix layer classes)."""
    out, seen = [], {type(layers[0]).__name__}
    for i, layer in enumerate(layers):
        name = type(layer).__name__
        if name in seen:
            continue
        seen.add(name)
        attention, network = _children(layer)
        wiring = _wiring(_probe(model, layers, attention, network, i), layer, attention, model.config)
        full = {"wiring": "sequential", "bypass": "post_attention_layernorm", "post_ffn_norm": None,
                "ffn_multiplier": None, **wiring}
        if wiring != first:
            out.append((name, tuple(sorted(full.items()))))
    return tuple(out)


@dataclass(frozen=True)
class ByLayer:
    """Reader ``moe`` on the layers whose network holds experts, ``dense`` on the others."""

    dense: Any
    moe: MoE

    def pick(self, layer: nn.Module):
        return self.moe if hasattr(module_at(layer, self.moe.block), self.moe.experts) else self.dense

    def z_site(self, layer: nn.Module) -> nn.Module:
        return self.pick(layer).z_site(layer)

    def first_layers(self, layer: nn.Module):
        return self.pick(layer).first_layers(layer)

    def rest(self, layer: nn.Module, hs):
        return self.pick(layer).rest(layer, hs)

    def own_pre_activations(self, layer: nn.Module, z: torch.Tensor):
        return own_pre_activations(self.pick(layer), layer, z)

    def kinks(self, layer: nn.Module, hs) -> dict:
        own = getattr(self.pick(layer), "kinks", None)
        return {} if own is None else own(layer, hs)


def adapt_recognised(model: nn.Module, ids: torch.Tensor | None = None):
    """The first of :func:`recognise`'s records whose adapted model passes the reconstruction gate
    on ``ids`` (:func:`~icl_verify.adapters.gate.check_reconstruction`), with a hint at the
    override when nothing is recognised; the last refusal when none passes."""
    from .records import adapt_record_lm

    try:
        records = recognise(model)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(
            f"{exc}. No record describes model type {model.config.model_type!r} either; if its decoder layers read "
            "the mixed stream through a dense first matrix, describe them with "
            "icl_verify.adapters.register_record(LayerRecord(...))") from None
    for i, record in enumerate(records):
        try:
            lm = adapt_record_lm(model, record)
            check_reconstruction(lm, ids)
            return lm
        except (ReconstructionError, UnsupportedModelError):
            if i == len(records) - 1:
                raise
