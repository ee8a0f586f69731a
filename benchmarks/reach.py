"""Reach: every causal-LM type of the installed ``transformers`` on a tiny random configuration
(float64), classified (``python -m benchmarks.reach [--write] [--dtype float32] [TYPE ...]``;
``--write`` puts the float64 table into docs/real-models.md between its ``reach`` markers).

    OK           the model is adapted (a record, a hand-written adapter, or a record recognised
                 from its module tree), passes the reconstruction gate, and the identity holds at
                 every layer and position of a 9-token prompt (error <= the error model's tolerance);
                 the detail gives the worst error/tolerance and the gate's gap/tolerance
    OK in float32  refused by the gate in float64 within float32 rounding (the model computes part
                 of its forward in float32, a router say), OK in float32
    unfit        the model type breaks a hypothesis of the theorem (which one is named)
    unsupported  the part that no adapter describes, the gate's refusal, or the step that failed

Biases that start at zero (Linear biases, the routers' score-correction biases) are drawn, so a
reader that ignored one is refused. No row is a traceback: every exception becomes its type and
first line.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import torch

from icl_verify.adapters import adapt_causal_lm
from icl_verify.adapters.gate import check_reconstruction
from icl_verify.adapters.records import tiny_causal_lm, tiny_config
from icl_verify.adapters.support import causal_lm_types
from icl_verify.adapters.unfit import REASONS
from icl_verify.errors import ReconstructionError, UnsupportedModelError
from icl_verify.causal_lm import identity_errors

MAX_PARAMETERS = 10_000_000
"""A tiny configuration larger than this (settings the generic overrides do not reach, such as a
vision tower) is not instantiated."""

SHRINK = dict(moe_intermediate_size=24, n_routed_experts=4, num_experts=4, num_local_experts=4, num_experts_per_tok=2,
              n_group=1, topk_group=1, first_k_dense_replace=1, kv_lora_rank=8, q_lora_rank=16, qk_rope_head_dim=4,
              qk_nope_head_dim=4, v_head_dim=8, shared_expert_intermediate_size=24, n_shared_experts=1,
              linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
              linear_conv_kernel_dim=3, expert_hidden_size=24, ffn_hidden_size=48, d_model=32, decoder_layers=2,
              encoder_layers=2, decoder_attention_heads=4, encoder_attention_heads=4, decoder_ffn_dim=48,
              encoder_ffn_dim=48, num_experts_per_token=2, linear_head_dim=8, linear_num_heads=4)
"""Settings of mixtures of experts, latent and linear attention and encoder-decoder families' decoders,
applied where the type's config has them."""

PER_TYPE = {"gpt_neo": dict(attention_types=[[["global", "local"], 1]])}
"""Settings a type's config validation needs at 2 layers."""


def overrides(model_type: str) -> dict:
    """Tiny settings beyond :func:`~icl_verify.adapters.records.tiny_config`'s for ``model_type``."""
    from transformers import AutoConfig

    own = AutoConfig.for_model(model_type).to_dict()
    out = {k: v for k, v in SHRINK.items() if k in own}
    if "qk_rope_head_dim" in own:  # latent attention: head size from its parts, no grouped keys
        out.update(head_dim=None, num_key_value_heads=4)
    return dict(out, **PER_TYPE.get(model_type, {}), experts_implementation="eager")  # float64: no grouped kernels


def _hand_built() -> dict:
    """The tiny models of the types whose adapters are written by hand (their own configs)."""
    from icl_verify.adapters import hybrid, mamba2_blocks as mamba2, mamba_blocks as mamba, nemotron_h, recurrent_gemma

    return {"mamba": mamba.tiny_mamba_lm, "falcon_mamba": lambda **kw: mamba.tiny_mamba_lm("falcon_mamba", **kw),
            "mamba2": mamba2.tiny_mamba2_lm, "nemotron_h": nemotron_h.tiny_nemotron_h,
            "recurrent_gemma": recurrent_gemma.tiny_recurrent_gemma_lm, "jamba": hybrid.tiny_jamba,
            "bamba": hybrid.tiny_bamba, "qwen3_next": hybrid.tiny_qwen3_next, "lfm2": hybrid.tiny_lfm2,
            "falcon_h1": hybrid.tiny_falcon_h1}


DOC = Path(__file__).resolve().parents[1] / "docs" / "real-models.md"
START, END = "<!-- reach:start -->", "<!-- reach:end -->"


def _line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = re.sub(r"\s+", " ", text)
    return f"{type(exc).__name__}: {text[:160]}"


def _size(model_type: str) -> int:
    """Parameters of the tiny configuration, counted on the meta device (nothing allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides(model_type)))
    return sum(p.numel() for p in model.parameters())


def classify(model_type: str, dtype: torch.dtype = torch.float64) -> tuple[str, str]:
    """``(status, detail)`` of one model type in ``dtype`` (module docstring; ``OK in float32``
    only in float64)."""
    if model_type in REASONS:
        return "unfit", REASONS[model_type]
    hand = _hand_built().get(model_type)
    if hand is None:
        try:
            n = _size(model_type)
        except Exception as exc:  # noqa: BLE001 - every failure is a row of the table
            return "unsupported", f"no tiny configuration: {_line(exc)}"
        if n > MAX_PARAMETERS:
            return "unsupported", f"no tiny configuration ({n:,} parameters at the tiny settings)"
    status, detail = _check(model_type, hand, dtype)
    if dtype == torch.float64 and status == "unsupported" and "within float32 rounding" in detail:
        status32, detail32 = _check(model_type, hand, torch.float32)
        if status32 == "OK":
            return "OK in float32", f"{detail32} in float32; float64: {detail}"
    return status, detail


CORRECTION_SCALE = 1.0
"""Standard deviation of the drawn score-correction biases: of the order of the sigmoid scores'
spread and beyond, so that a reader ignoring one chooses other experts (0.1 for every other bias)."""


def _draw_zero_biases(model) -> None:
    """Draw every bias that starts at zero (the routers' score-correction biases, Linear biases):
    a reader that ignored one would otherwise compute what the model computes."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, t in [*model.named_buffers(), *model.named_parameters()]:
            if name.endswith("bias") and t.is_floating_point() and not bool(t.any()):
                scale = CORRECTION_SCALE if name.endswith("e_score_correction_bias") else 0.1
                t.copy_(scale * torch.randn(t.shape, generator=g, dtype=t.dtype))


def _check(model_type: str, hand, dtype: torch.dtype) -> tuple[str, str]:
    """``(status, detail)`` of the tiny model of ``model_type`` in ``dtype``."""
    name = str(dtype).split(".")[-1]
    try:
        model = (hand(dtype=dtype) if hand is not None
                 else tiny_causal_lm(model_type, dtype=dtype, **overrides(model_type)))
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation("eager")  # float64 has no grouped kernels
        _draw_zero_biases(model)
        ids = torch.randint(1, model.get_input_embeddings().weight.shape[0], (1, 9),  # 0: a padding token
                            generator=torch.Generator().manual_seed(3))
        model(ids, use_cache=False)
    except Exception as exc:  # noqa: BLE001
        return "unsupported", f"the model itself does not run in {name}: {_line(exc)}"
    try:
        lm = adapt_causal_lm(model, ids)
    except ReconstructionError as exc:
        return "unsupported", f"gate: {exc}"
    except UnsupportedModelError as exc:
        return ("unfit" if "does not fit" in str(exc) else "unsupported"), str(exc)
    except Exception as exc:  # noqa: BLE001
        return "unsupported", _line(exc)
    try:
        with torch.no_grad():
            gate = check_reconstruction(lm, ids).ratio
            _, ratios, _ = identity_errors(lm, ids)
    except Exception as exc:  # noqa: BLE001
        return "unsupported", f"identity check: {_line(exc)}"
    worst = float(ratios.max())
    if worst > 1:
        return "FAILS", f"error/tolerance {worst:.3g}"
    return "OK", f"worst error/tolerance {worst:.2g}, gate gap/tolerance {gate:.2g}"


def table(types: list[str], dtype: torch.dtype = torch.float64) -> tuple[str, dict[str, int]]:
    """The Markdown table of ``types`` in ``dtype`` and the count per status."""
    import transformers

    rows, counts = [], {}
    for t in types:
        status, detail = classify(t, dtype)
        counts[status] = counts.get(status, 0) + 1
        detail = detail.split(". No record describes")[0].replace("|", "/").replace("\n", " ")
        rows.append(f"| {t} | {status} | {detail[:240]} |")
        print(rows[-1], file=sys.stderr, flush=True)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    name = str(dtype).split(".")[-1]
    head = (f"transformers {transformers.__version__}, {len(types)} causal-LM types "
            f"(`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`), tiny random configurations in {name}: {summary}.\n\n"
            "| model type | status | detail |\n|---|---|---|\n")
    return head + "\n".join(rows) + "\n", counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("types", nargs="*", help="model types (default: every causal-LM type)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/real-models.md")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)
    if args.write and args.dtype != "float64":
        parser.error("--write writes the float64 table only")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.set_num_threads(1)
    text, _ = table(args.types or sorted(causal_lm_types()), getattr(torch, args.dtype))
    print(text)
    if args.write:
        doc = DOC.read_text()
        start, end = doc.index(START) + len(START), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + text + doc[end:])


if __name__ == "__main__":
    main()
