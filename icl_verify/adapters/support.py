"""Whether a checkpoint can be adapted, decided from its ``config.json`` alone (no weight read).

A model type is supported when a record or an adapter is registered for it
(:func:`~icl_verify.adapters.adapt_causal_lm`), or when its layers are recognised from the
module tree of the model built on the ``meta`` device (:mod:`.recognise`; no memory, no
weights). Everything else is refused with an :class:`~icl_verify.errors.UnsupportedModelError`
naming the reason, before a checkpoint is loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UnsupportedModelError
from ._common import require_transformers
from ._registry import MODEL_ADAPTERS
from .unfit import REASONS


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory; :class:`UnsupportedModelError` if it is
    missing or not JSON."""
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UnsupportedModelError(f"{directory}: no config.json (give a Hugging Face model folder)") from None
    except json.JSONDecodeError as exc:
        raise UnsupportedModelError(f"{path}: not valid JSON ({exc})") from None


def causal_lm_types() -> dict[str, str]:
    """``{model_type: causal-LM class name}`` of the installed ``transformers``."""
    require_transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def check_supported(config: dict[str, Any]) -> str:
    """The model type of ``config`` (a parsed ``config.json``) if it can be adapted (a registered
    adapter, or a module tree recognition can start from: :func:`check_structure`); otherwise an
    :class:`UnsupportedModelError` saying why (no causal-LM class in the installed
    ``transformers``, a layer that does not fit the decomposition, no part recognition needs)."""
    tf = require_transformers()
    model_type = config.get("model_type")
    if model_type in REASONS:
        raise UnsupportedModelError(f"model type {model_type!r} does not fit the implicit-update decomposition: "
                                    f"{REASONS[model_type]}")
    if model_type in MODEL_ADAPTERS:
        return model_type
    if model_type not in causal_lm_types():
        names = ", ".join(config.get("architectures") or []) or "none listed"
        raise UnsupportedModelError(f"model type {model_type!r} (architectures: {names}) is not a causal language "
                                    f"model of transformers {tf.__version__}")
    check_structure(config)
    return model_type


def check_structure(config: dict[str, Any]) -> None:
    """For a type with no adapter: the model built from ``config`` on the ``meta`` device (no
    memory, no weights) must have the parts recognition starts from, a decoder layer list whose
    layers hold a network (:mod:`.recognise`); :class:`UnsupportedModelError` naming the missing
    part otherwise. The rest (first matrices, wiring, the gate) needs values: it is decided after
    loading."""
    import torch

    from .recognise import layer_list, network_of

    tf = require_transformers()
    fields = {k: v for k, v in config.items() if k != "model_type"}
    try:
        cfg = tf.AutoConfig.for_model(config["model_type"], **fields)
        with torch.device("meta"):
            model = tf.AutoModelForCausalLM.from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - any failure to build is a refusal naming it
        raise UnsupportedModelError(f"model type {config['model_type']!r}: transformers cannot build it from its "
                                    f"config.json ({type(exc).__name__}: {exc})") from None
    layers = model.get_submodule(layer_list(model))
    network_of(model, layers[0])
