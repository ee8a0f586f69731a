"""The reconstruction gate measured (``python -m benchmarks.gate``; prints Markdown): for every
registered architecture in float64 and float32, the worst gap over tolerance of any stage and how
many stages are bit for bit equal to the model's; for SmolLM2-135M (30 layers, width 576) the same
on a 40-token probe in float32, float64 and bfloat16, and the gate's time against one forward
pass of the model (best of 3, one thread).
"""
from __future__ import annotations

import time
import warnings

import torch

from icl_verify.adapters import adapt_causal_lm, get_architecture, list_architectures
from icl_verify.adapters.gate import probe_ids, reconstruction


def architectures() -> None:
    print("| dtype | architectures | worst gap / tolerance | stages equal bit for bit |")
    print("|---|---|---|---|")
    for dtype in (torch.float64, torch.float32):
        worst, name, exact, stages = 0.0, "", 0, 0
        for arch in list_architectures():
            lm = get_architecture(arch).factory(seed=1, dtype=dtype)
            rec = reconstruction(lm, probe_ids(lm.model))
            if rec.ratio >= worst:
                worst, name = rec.ratio, arch
            exact += sum(g == 0 for g in rec.gaps)
            stages += len(rec.gaps)
        print(f"| {str(dtype).split('.')[-1]} | {len(list_architectures())} | {worst:.3g} ({name}) "
              f"| {exact} of {stages} |")


def smollm2(repeats: int = 3) -> None:
    from icl_verify.causal_lm import exact_casts, load_model

    model, _ = load_model(None)
    ids = probe_ids(model, t=40)[:1]
    print("\n| SmolLM2-135M | worst gap / tolerance | forward (s) | gate (s) | gate / forward |")
    print("|---|---|---|---|---|")
    with exact_casts(model) as cast, torch.no_grad():
        for name in ("float32", "float64", "bfloat16"):
            cast(getattr(torch, name))
            lm = adapt_causal_lm(model, ids)
            best = {"forward": float("inf"), "gate": float("inf")}
            for _ in range(repeats):
                t = time.perf_counter()
                model(ids, use_cache=False)
                best["forward"] = min(best["forward"], time.perf_counter() - t)
                t = time.perf_counter()
                rec = reconstruction(lm, ids)
                best["gate"] = min(best["gate"], time.perf_counter() - t)
            print(f"| {name} | {rec.ratio:.3g} | {best['forward']:.3f} | {best['gate']:.3f} "
                  f"| {best['gate'] / best['forward']:.2f} |")


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    architectures()
    smollm2()
