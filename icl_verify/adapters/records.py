"""Declarative adapters: one frozen :class:`LayerRecord` per model type, read by one generic
adapter, :class:`RecordAdapter`.

A record says where things are in a decoder layer and how they are wired (docs/theory.md §1 rows)::

    sequential  s = input of the record's ``bypass`` module (the feed-forward norm;
                    ``None``: s = z, Olmo 2), z = input of the network,
                out = s + N_f(f(W z + b))            N_f: ``post_ffn_norm`` (sandwich norms)
    parallel    s = x + a, a = first output of ``attention``; z = input of the network,
                out = s + f(W z + b)
    post        z = input of the network (the attention's normalised output), s = z,
                out = N(s + f(W z + b))              N: ``post_ffn_norm``

``z`` and ``s`` are read off the unmodified layer's own forward with pre-hooks (the forward
stops at the network's input), so attention variants (rotary, sliding windows, QK norms,
soft-capping, bias) need no code here. The network is a feed-forward reader
(:mod:`~icl_verify.adapters.ffn`, :mod:`~icl_verify.adapters.moe`).

``register_record(record, tiny=...)`` makes the model type work with
:func:`~icl_verify.adapters.adapt_causal_lm` and registers a tiny random architecture.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..blocks import ContextualBlock, Decomposition, Stack
from ..errors import UnsupportedModelError
from ..registry import Registry
from ..seeding import seeded
from ._common import (
    LayerCalls, attention_mask, eager_experts, position_ids, require_transformers, run_until, tiny_model,
)
from ._registry import AdaptedLM, register_architecture, register_model_adapter
from .ffn import module_at, own_pre_activations

WIRINGS = ("sequential", "parallel", "post")


@dataclass(frozen=True)
class LayerRecord:
    """Where a model type keeps the pieces of the decomposition (paths are dotted attribute
    names: of the model for ``layers``/``final_norm``/``rotary``, of a layer otherwise).

    Attributes:
        model_type: ``config.model_type``.
        ffn: feed-forward reader (``Gated``, ``FusedGated``, ``Plain``, ``MoE``).
        wiring: ``"sequential"``, ``"parallel"`` or ``"post"`` (module docstring).
        bypass: sequential wiring: the module whose input is ``s``; ``None``: ``s = z``.
        attention: parallel wiring: the module whose first output ``a`` gives ``s = x + a``.
        post_ffn_norm: norm applied to ``f`` (sequential) or to ``s + f`` (post).
        parallel_flag: a layer attribute; when present and false the layer is sequential.
        layers, final_norm, rotary: the layer list, final norm and rotary module (or ``None``).
        causal_flag: a config attribute saying whether attention is causal (BERT's
            ``is_decoder``); causal when ``None``.
        ffn_multiplier: a config attribute scaling ``f`` before the residual (Granite's
            ``residual_multiplier``), or ``None``.
        head: a module of the model whose own forward maps the final norm's output to the logits
            (BERT's ``cls``, RoBERTa's ``lm_head``: transform, norm and output matrix), used
            instead of the output embeddings; ``None``: not used.
        own_calls: call each layer with the arguments the model's own forward passes it (masks,
            positions, rotary tables; :class:`~icl_verify.adapters._common.LayerCalls`) instead of
            a causal mask and positions built here.
        by_class: ``((layer class name, wiring fields), ...)``: fields that differ on the layers
            of that class (a hybrid whose attention layers have post-norms and whose recurrent
            layers do not); see :meth:`for_layer`.
    """

    model_type: str
    ffn: Any
    wiring: str = "sequential"
    bypass: str | None = "post_attention_layernorm"
    attention: str = "self_attn"
    post_ffn_norm: str | None = None
    parallel_flag: str | None = None
    layers: str = "model.layers"
    final_norm: str | None = "model.norm"
    rotary: str | None = "model.rotary_emb"
    causal_flag: str | None = None
    ffn_multiplier: str | None = None
    head: str | None = None
    own_calls: bool = False
    by_class: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def __post_init__(self):
        if self.wiring not in WIRINGS:
            raise ValueError(f"wiring must be one of {WIRINGS}, got {self.wiring!r}")

    def for_layer(self, layer: nn.Module) -> "LayerRecord":
        """The record of ``layer``: this one with the fields ``by_class`` gives its class."""
        fields = dict(self.by_class).get(type(layer).__name__)
        return self if fields is None else dataclasses.replace(self, by_class=(), **dict(fields))


RECORDS: Registry[LayerRecord] = Registry("layer record")


class RecordAdapter(ContextualBlock):
    """One unmodified decoder layer ``(B, T, d) -> (B, T, d)`` read through a record.

    Args:
        record: the model type's :class:`LayerRecord`.
        layer: the decoder layer.
        config: the model's config (sliding windows, layer types, causality).
        rotary: the model's rotary module or ``None``.
        index: the layer's index (its layer type).
        calls: the model's own layer arguments (``record.own_calls``), or ``None``.
    """

    def __init__(self, record: LayerRecord, layer: nn.Module, config: Any, rotary: nn.Module | None,
                 index: int, calls: LayerCalls | None = None):
        super().__init__()
        self.record = record
        self.calls = calls
        self.layer = layer
        self.rotary = rotary
        self.index = index
        types = getattr(config, "layer_types", None)
        self.layer_type = None if types is None else types[index]
        window = getattr(config, "sliding_window", None)
        sliding = self.layer_type in (None, "sliding_attention") and getattr(config, "use_sliding_window", True)
        self.window = window if sliding else None
        self.causal = True if record.causal_flag is None else bool(getattr(config, record.causal_flag))
        self.multiplier = None if record.ffn_multiplier is None else getattr(config, record.ffn_multiplier)
        wiring = record.wiring
        if record.parallel_flag is not None and not getattr(layer, record.parallel_flag):
            wiring = "sequential"
        self.wiring = wiring
        self._params = set(inspect.signature(layer.forward).parameters)

    def _kwargs(self, x: torch.Tensor) -> dict:
        kw = {"attention_mask": attention_mask(x.shape[1], x.dtype, x.device, causal=self.causal,
                                               window=self.window)}
        pos = position_ids(x)
        if "position_ids" in self._params:
            kw["position_ids"] = pos
        if self.rotary is not None and "position_embeddings" in self._params:
            extra = ()
            if self.layer_type is not None and "layer_type" in inspect.signature(self.rotary.forward).parameters:
                extra = (self.layer_type,)
            kw["position_embeddings"] = self.rotary(x, pos, *extra)
        if "alibi" in self._params:
            kw["alibi"] = None
        if "use_cache" in self._params:
            kw["use_cache"] = False
        return kw

    def _caller(self, x: torch.Tensor):
        """``run() -> layer(x, ...)`` with the layer's arguments (prepared before any hook is set)."""
        args, kwargs = ((), self._kwargs(x)) if self.calls is None else self.calls(self.index, x)
        return lambda: self.layer(x, *args, **kwargs)

    def decompose(self, x: torch.Tensor) -> Decomposition:
        x = x.to(next(self.layer.parameters()).device)  # layers spread by device_map="auto"
        inputs, outputs = {}, {}
        if self.wiring == "parallel":
            outputs["a"] = module_at(self.layer, self.record.attention)
        elif self.wiring == "sequential" and self.record.bypass is not None:
            inputs["s"] = module_at(self.layer, self.record.bypass)
        z, got = run_until(self.record.ffn.z_site(self.layer), self._caller(x), inputs=inputs, outputs=outputs)
        if z is None:
            raise UnsupportedModelError(
                f"{self.record.model_type} layer {self.index}: its network input was never reached")
        s = x + got["a"] if self.wiring == "parallel" else got.get("s", z)
        lead = x.shape[:-1]  # a layer may flatten (B, T) before its network (OPT)
        return Decomposition(z.reshape(lead + z.shape[-1:]), s.reshape(lead + s.shape[-1:]))

    def first_layers(self):
        return self.record.ffn.first_layers(self.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output ``(B, T, d)`` with the pre-activations in the model's own precision
        (:func:`~.ffn.own_pre_activations`)."""
        dec = self.decompose(x)
        return self.output(own_pre_activations(self.record.ffn, self.layer, dec.z), dec.s)

    def kinks(self, hs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
        own = getattr(self.record.ffn, "kinks", None)
        return {} if own is None else own(self.layer, hs)

    def output(self, hs: Sequence[torch.Tensor], s: torch.Tensor | None) -> torch.Tensor:
        f = self.record.ffn.rest(self.layer, hs)
        if self.multiplier is not None:
            f = f * self.multiplier
        norm = None if self.record.post_ffn_norm is None else module_at(self.layer, self.record.post_ffn_norm)
        if self.wiring == "post":
            return norm(s + f)
        return s + (f if norm is None else norm(f))

    def bypass_site(self) -> tuple[nn.Module, str]:
        """Where the bypass joins the layer's own forward: ``(module, "input" | "output")``."""
        if self.wiring == "post":
            return module_at(self.layer, self.record.post_ffn_norm), "input"
        return self.layer, "output"

    def extra_repr(self) -> str:
        return f"model_type={self.record.model_type}, wiring={self.wiring}"


def _check_shape(record: LayerRecord, model: nn.Module) -> None:
    """:class:`UnsupportedModelError` naming the first path of ``record`` that ``model`` lacks."""
    try:
        layers = module_at(model, record.layers)
        if record.final_norm is not None:
            module_at(model, record.final_norm)
        for layer in layers:
            record.for_layer(layer).ffn.z_site(layer)
            record.for_layer(layer).ffn.first_layers(layer)
    except (AttributeError, TypeError) as exc:
        raise UnsupportedModelError(
            f"{type(model).__name__} (model type {record.model_type!r}) does not have the layout of its "
            f"record: {exc}") from None


def adapt_record_lm(model: nn.Module, record: LayerRecord | None = None) -> AdaptedLM:
    """A causal LM -> :class:`AdaptedLM` through its model type's record (no copy of weights).

    A float64 model with fused experts is switched to transformers' eager loop over experts
    (the grouped kernels have no float64). ``embed`` is the model's own computation up to the
    first layer (scaled or positional
    embeddings included); ``head`` is ``lm_head(final_norm(h))`` with the config's logit
    soft-capping (``final_logit_softcapping``), scale (``logit_scale``) or divisor
    (``logits_scaling``).
    """
    config = model.config
    record = RECORDS.get(config.model_type) if record is None else record
    _check_shape(record, model)
    eager_experts(model)
    layers = module_at(model, record.layers)
    rotary = None if record.rotary is None else module_at(model, record.rotary)
    calls = LayerCalls(model, layers) if record.own_calls else None
    stack = Stack([RecordAdapter(record.for_layer(layer), layer, config, rotary, i, calls)
                   for i, layer in enumerate(layers)])
    norm = nn.Identity() if record.final_norm is None else module_at(model, record.final_norm)
    first = layers[0]

    def embed(ids: torch.Tensor) -> torch.Tensor:
        return run_until(first, lambda: model(input_ids=ids, use_cache=False))[0]

    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)

    own_head = None if record.head is None else module_at(model, record.head)

    def head(h: torch.Tensor) -> torch.Tensor:
        out = model.get_output_embeddings()
        h = h.to(out.weight.device)
        logits = (own_head if own_head is not None else out)(norm(h))
        if scale is not None:
            logits = logits * scale
        if divisor is not None:
            logits = logits / divisor
        return logits if cap is None else torch.tanh(logits / cap) * cap

    return AdaptedLM(model, stack, embed, head)


def tiny_config(model_type: str, **overrides) -> Any:
    """The config of :func:`tiny_causal_lm`: width 32, 2 layers, 4 heads (2 key/value heads, head
    size 8), vocabulary 64, with the type's registered tiny settings and ``overrides`` (``None``:
    the type's own default)."""
    tf = require_transformers()
    kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                  initializer_range=0.2, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    kwargs.update(TINY.get(model_type, {}))
    kwargs.update(overrides)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the type has no such setting
    return tf.AutoConfig.for_model(model_type, **kwargs)


def tiny_causal_lm(model_type: str, *, seed: int = 0, dtype: torch.dtype = torch.float64,
                   **overrides) -> nn.Module:
    """A seeded tiny random causal LM of ``model_type`` built offline from :func:`tiny_config`.
    No embedding row is zero (the padding token's is drawn too)."""
    tf = require_transformers()
    model = tiny_model(tf.AutoModelForCausalLM.from_config, tiny_config(model_type, **overrides), seed=seed,
                       dtype=dtype)
    weight = model.get_input_embeddings().weight
    with torch.no_grad(), seeded(seed + 1):  # the padding token's zero row: a token alone would have z = 0
        zero = weight.abs().sum(-1) == 0
        weight[zero] = 0.2 * torch.randn(int(zero.sum()), weight.shape[1], dtype=weight.dtype)
    return model


TINY: dict[str, dict] = {}


def register_record(record: LayerRecord, *, tiny: dict | None = None, tags: tuple[str, ...] = (),
                    architecture: bool = True, replace: bool = False) -> LayerRecord:
    """Register ``record`` for its model type: :func:`adapt_causal_lm` then reads models of that
    type, and (``architecture``) a tiny random one (settings ``tiny``) joins
    :func:`list_architectures` with ``tags``."""
    RECORDS.add(record.model_type, record, replace=replace)
    register_model_adapter(record.model_type, lambda model: adapt_record_lm(model, record), replace=replace)
    TINY[record.model_type] = dict(tiny or {})
    if architecture:
        def factory(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> AdaptedLM:
            return adapt_record_lm(tiny_causal_lm(record.model_type, seed=seed, dtype=dtype), record)

        factory.__doc__ = f"A tiny random {record.model_type} (width 32, 2 layers), adapted."
        register_architecture(record.model_type, factory, tags=("record", record.wiring) + tuple(tags),
                              replace=replace)
    return record


def list_records(pattern: str = "*") -> list[str]:
    """Model types with a registered record, matching ``pattern``."""
    return RECORDS.names(pattern)
