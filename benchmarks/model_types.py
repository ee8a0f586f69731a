"""Every supported model type on its tiny random configuration, and the cost of the
every-layer, every-position check of a mixture-of-experts model against its forward pass
(``python -m benchmarks.model_types``; prints Markdown).

Per model type: its record (wiring, feed-forward reader), first matrices, bypass, and the worst
relative error in float64 and float32 of (a) the identity at every layer and position of a
9-token prompt (``icl_verify.causal_lm.identity_errors``) and (b) the check through the model's own
forward (``icl_verify.causal_lm.through_model``), with the negative control.
"""
from __future__ import annotations

import time

import torch

from icl_verify.adapters import adapt_causal_lm, list_records, tiny_causal_lm
from icl_verify.adapters.ffn import FusedGated, Gated, Plain
from icl_verify.adapters.moe import MoE
from icl_verify.adapters.records import RECORDS
from icl_verify.causal_lm import identity_errors
from icl_verify.causal_lm.through_model import through_model_check
from icl_verify.updates import stack_updates


def first_matrices(record) -> str:
    ffn = record.ffn
    if isinstance(ffn, Gated):
        return f"`{ffn.mlp}.{ffn.gate}`, `{ffn.mlp}.{ffn.up}`"
    if isinstance(ffn, FusedGated):
        return f"`{ffn.mlp}.{ffn.gate_up}` (gate and up stacked)"
    if isinstance(ffn, Plain):
        return f"`{ffn.first}`" + (" (Conv1D, transposed view)" if record.model_type == "gpt2" else "")
    if isinstance(ffn, MoE):
        shared = "" if ffn.shared is None else f", `{ffn.shared}.gate_proj/up_proj`, `{ffn.shared_gate}`"
        return f"router `{ffn.block}.{ffn.router}`, `{ffn.experts}.gate_up_proj[e]` for every expert{shared}"
    return type(ffn).__name__


def bypass(record) -> str:
    if record.wiring == "parallel":
        flag = "" if record.parallel_flag is None else f" (sequential if not `{record.parallel_flag}`)"
        return f"`x + {record.attention}(...)`{flag}"
    if record.wiring == "post":
        return f"`s = z`, joins inside `{record.post_ffn_norm}`"
    return "`s = z` (no pre-norm)" if record.bypass is None else f"input of `{record.bypass}`"


def errors(model_type: str, dtype: torch.dtype) -> tuple[float, float, float]:
    model = tiny_causal_lm(model_type, dtype=dtype)
    lm = adapt_causal_lm(model)
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        errs, _, _ = identity_errors(lm, ids)
        check = through_model_check(lm, ids, stack_updates(lm.stack, lm.embed(ids)))
    return float(errs.max()), check["logits_rel_diff"], check["control_rel_diff"]


def table() -> None:
    print("| model type | wiring | first matrices | bypass `s` | identity f64 | identity f32 "
          "| own forward f64 | own forward f32 | control |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in list_records():
        rec = RECORDS[name]
        e64, t64, c64 = errors(name, torch.float64)
        e32, t32, _ = errors(name, torch.float32)
        print(f"| {name} | {rec.wiring} | {first_matrices(rec)} | {bypass(rec)} | {e64:.1e} | {e32:.1e} "
              f"| {t64:.1e} | {t32:.1e} | {c64:.2f} |", flush=True)


def moe_cost(repeats: int = 5) -> None:
    """Every-layer every-position updates (factored) and the full identity check with its error
    model, against one forward pass, for a random Qwen3-MoE (width 256, 4 layers, 8 experts,
    top 2, T = 128, float32, one thread)."""
    torch.set_num_threads(1)
    model = tiny_causal_lm("qwen3_moe", dtype=torch.float32, hidden_size=256, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=4, head_dim=32, num_experts=8,
                           moe_intermediate_size=256, intermediate_size=512, vocab_size=512,
                           experts_implementation="eager")
    lm = adapt_causal_lm(model)
    ids = torch.randint(0, 512, (1, 128), generator=torch.Generator().manual_seed(0))

    def updates():
        x = lm.embed(ids)
        stack_updates(lm.stack, x, every_position=True)

    fns = {"forward": lambda: model(ids, use_cache=False), "updates": updates,
           "identity": lambda: identity_errors(lm, ids)}
    best = {k: float("inf") for k in fns}
    with torch.no_grad():
        for _ in range(repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t)
    print(f"\nqwen3_moe d=256, 4 layers, 8 experts top-2, T=128, float32, 1 thread: forward {best['forward']:.3f} s, "
          f"every-layer every-position updates {best['updates']:.3f} s ({best['updates'] / best['forward']:.1f}x), "
          f"identity check with error model {best['identity']:.3f} s ({best['identity'] / best['forward']:.1f}x)")


if __name__ == "__main__":
    table()
    moe_cost()
