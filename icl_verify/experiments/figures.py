"""The papers' figures and the generalisation's analysis, each written as PNG + CSV + JSON.

Every public ``fig*`` function takes trained models (and their training histories), draws one
figure, writes ``<name>.png``, ``<name>.csv`` and ``<name>.json`` (configuration and summary
numbers) into ``out`` and returns the summary dict.

- :func:`fig1`: validation loss of the in-context and the implicit-update predictions during
  training, and their absolute difference (log axis).
- :func:`fig2`: ``||dW_{i+1} - dW_i||_F`` against context length ``i`` (log-log) with an
  ``O(1/i)`` reference line and a least-squares slope.
- :func:`fig3`: test loss against number of examples for the implicit update and for explicit
  SGD finetuning of ``W`` alone, and the cosine similarity of the two weight changes.
- :func:`positions`: the identity at every position and block, position-by-position similarity
  of the updates, and the rank of their sum over positions.
- :func:`blocks`: block-by-block similarity of the updates and the update norm per block over
  training.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..dynamics import increment_norms, prefix_updates  # noqa: E402
from ..updates import (  # noqa: E402
    apply_update, position_updates, run_stack_updated, single_token, stack_updates,
)
from .model import first_weights, forward_with_weights  # noqa: E402
from .task import Prompts  # noqa: E402

#: relative singular-value threshold of the numerical rank: ``#{k : sigma_k > RANK_TOL sigma_1}``
RANK_TOL = 1e-8
#: plotted in place of exact zeros on log axes
LOG_FLOOR = 1e-18
#: example counts at which Fig 3 reports its numbers
REPORT_COUNTS = (0, 1, 2, 5, 10, 20, 50)


def _write(out: Path, name: str, fig, header: Sequence[str], rows: Sequence[Sequence],
           summary: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    with open(out / f"{name}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _band(ax, x, values: np.ndarray, label: str, color, **kw):
    """Mean line and 10-90 % band of ``values`` ``(samples, len(x))``."""
    mean = values.mean(0)
    lo, hi = np.quantile(values, [0.1, 0.9], axis=0)
    ax.plot(x, mean, color=color, label=label, **kw)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    return mean


def _flat(dws: Sequence[torch.Tensor], lead: int) -> torch.Tensor:
    """Concatenate matrices ``(*lead, m, d)`` over blocks into vectors ``(*lead, K)``."""
    return torch.cat([w.flatten(lead) for w in dws], dim=-1)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine over the last axis; 0 where either vector is zero."""
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(torch.finfo(a.dtype).tiny),
                       torch.zeros_like(den))


# --------------------------------------------------------------------------------------- Fig 1

def fig1(histories: Sequence[list[dict]], out: Path, *, name: str = "fig1", title: str,
         config: dict, dtype: torch.dtype = torch.float64) -> dict:
    """Validation loss of the in-context prediction and of the implicit-update prediction
    (query alone through ``W + dW(C)``) over training, one history per seed; and
    ``|L_icl - L_implicit|`` and ``max_prompt |pred_icl - pred_implicit|`` on a log axis."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 4.5))
    rows, colors = [], plt.cm.tab10.colors
    for k, hist in enumerate(histories):
        step = np.array([h["step"] for h in hist])
        icl = np.array([h["icl_loss"] for h in hist])
        imp = np.array([h["implicit_loss"] for h in hist])
        gap = np.array([h["loss_gap"] for h in hist])
        pgap = np.array([h["max_prediction_gap"] for h in hist])
        sfx = f" (seed {k})" if len(histories) > 1 else ""
        ax.plot(step, icl, color=colors[k], lw=2.5, alpha=0.6, label=f"in-context{sfx}")
        ax.plot(step, imp, color="black" if len(histories) == 1 else colors[k], ls="--", lw=1.2,
                label=f"implicit update W+dW(C){sfx}")
        bx.plot(step, np.maximum(gap, LOG_FLOOR), color=colors[k], marker=".", ls="-",
                label=f"|loss difference|{sfx}")
        bx.plot(step, np.maximum(pgap, LOG_FLOOR), color=colors[k], marker="x", ls=":",
                label=f"max |prediction difference|{sfx}")
        rows += [[k, *r] for r in zip(step, icl, imp, gap, pgap)]
    eps = torch.finfo(dtype).eps
    bx.axhline(eps, color="gray", lw=1, label=f"machine epsilon ({eps:.1e})")
    ax.set(title=f"{title}: validation loss during training", xlabel="training step",
           ylabel="validation MSE")
    ax.legend(fontsize=8)
    bx.set(title=f"|difference| (exact zeros drawn at {LOG_FLOOR:g})", yscale="log",
           xlabel="training step", ylabel="absolute difference")
    bx.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    gaps = [h["loss_gap"] for hist in histories for h in hist]
    pgaps = [h["max_prediction_gap"] for hist in histories for h in hist]
    summary = {
        "config": config,
        "max_loss_gap": max(gaps),
        "max_prediction_gap": max(pgaps),
        "max_loss_gap_in_eps": max(gaps) / eps,
        "final_icl_loss": [hist[-1]["icl_loss"] for hist in histories],
        "final_implicit_loss": [hist[-1]["implicit_loss"] for hist in histories],
        "initial_icl_loss": [hist[0]["icl_loss"] for hist in histories],
    }
    return _write(out, name, fig, ["seed", "step", "icl_loss", "implicit_loss", "loss_gap",
                                   "max_prediction_gap"], rows, summary)


# ------------------------------------------------------------------------------- prefix updates

@torch.no_grad()
def prefix_analysis(model, prompts: Prompts) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Predictions and updates of the query after each prefix ``c_1..c_i``, ``i = 0..n``.

    Returns the implicit-update predictions ``(B, n+1)`` (query alone through ``W + dW``, equal
    to the in-context ones) and, per block, the dense updates ``dW^l_i`` ``(B, n+1, m, d+1)``.
    One block: :func:`prefix_updates`; a stack: :func:`stack_updates` per prefix (block ``l``'s
    reference is its own with-context input at the query, alone).
    """
    ctx, query = prompts.context, prompts.query
    if len(model) == 1:
        block = model.blocks[0]
        upd = prefix_updates(block, ctx, query)
        return apply_update(block, upd)[..., -1], [upd.dense()[0]]
    preds, dws = [], []
    for i in range(ctx.shape[1] + 1):
        ups = stack_updates(model, torch.cat([ctx[:, :i], query[:, None]], dim=1))
        preds.append(run_stack_updated(model, query, ups)[:, -1])
        dws.append([u.dense()[0] for u in ups])
    return torch.stack(preds, 1), [torch.stack(d, 1) for d in zip(*dws)]


def increment_norms_per_block(model, prompts: Prompts, dws: list[torch.Tensor] | None = None
                              ) -> torch.Tensor:
    """``||dW^l_{i+1} - dW^l_i||_F`` for ``i = 0..n-1``: ``(B, n, L)``. One block:
    :func:`increment_norms` of :func:`prefix_updates` (from the factors)."""
    if len(model) == 1:
        with torch.no_grad():
            upd = prefix_updates(model.blocks[0], prompts.context, prompts.query)
        return increment_norms(upd)[..., :1]
    if dws is None:
        dws = prefix_analysis(model, prompts)[1]
    return torch.stack([(w[:, 1:] - w[:, :-1]).flatten(2).norm(dim=-1) for w in dws], dim=-1)


def fit_slope(i: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``log y`` against ``log i``."""
    keep = y > 0
    return float(np.polyfit(np.log(i[keep]), np.log(y[keep]), 1)[0])


# --------------------------------------------------------------------------------------- Fig 2

def fig2(model, initial, prompts: Prompts, out: Path, *, name: str = "fig2", title: str,
         config: dict, fit_from: int = 5) -> dict:
    """``||dW_{i+1} - dW_i||_F`` against context length ``i = 1..n-1`` for the trained model
    (mean and 10-90 % band over prompts, one line per block) and the model at initialisation
    (dashed), log-log, with a ``c/i`` reference line; slopes fitted on ``i >= fit_from``."""
    inc = increment_norms_per_block(model, prompts).numpy()[:, 1:]  # i = 1..n-1
    inc0 = increment_norms_per_block(initial, prompts).numpy()[:, 1:]
    n1, L = inc.shape[1], inc.shape[2]
    i = np.arange(1, n1 + 1)
    fit = i >= min(fit_from, max(1, n1 // 2))
    fig, axes = plt.subplots(1, L, figsize=(7 if L == 1 else 3.6 * L, 5), sharey=True,
                             squeeze=False)
    slopes, slopes0, rows = [], [], []
    for l in range(L):
        ax = axes[0, l]
        mean = _band(ax, i, inc[:, :, l], "trained: mean, 10-90 %", "C0", lw=2)
        mean0 = inc0[:, :, l].mean(0)
        ax.plot(i, mean0, color="C1", ls="--", lw=1.2, label="at initialisation: mean")
        slopes.append(fit_slope(i[fit], mean[fit]))
        slopes0.append(fit_slope(i[fit], mean0[fit]))
        c = float(np.exp(np.mean(np.log(mean[fit]) + np.log(i[fit]))))
        ax.plot(i, c / i, color="red", lw=1.5, ls=":", label="reference c / i")
        q10, q90 = np.quantile(inc[:, :, l], [0.1, 0.9], axis=0)
        rows += [[l, *r] for r in zip(i, mean, q10, q90, mean0)]
        head = f"{title}: increments of dW" if L == 1 else f"block {l}"
        ax.set(xscale="log", yscale="log", xlabel="context length i",
               title=f"{head}\nfitted slope {slopes[-1]:.2f} (init {slopes0[-1]:.2f})")
        if l == 0:
            ax.set_ylabel("||dW_{i+1} - dW_i||_F")
            ax.legend(fontsize=8)
    if L > 1:
        fig.suptitle(f"{title}: increments of the implicit update per block")
    summary = {"config": config, "slope_trained": slopes, "slope_initial": slopes0,
               "fit_range": [int(i[fit][0]), int(i[fit][-1])],
               "first_increment_mean": inc[:, 0].mean(0).tolist(),
               "last_increment_mean": inc[:, -1].mean(0).tolist()}
    return _write(out, name, fig, ["block", "i", "mean", "q10", "q90", "mean_initial"], rows,
                  summary)


# --------------------------------------------------------------------------------------- Fig 3

def finetune(model, prompts: Prompts, lr: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Explicit finetuning of every block's first MLP matrix ``W^l`` alone, per prompt: SGD,
    learning rate ``lr``, batch 1, one step per example in order, on the squared error
    ``(f_W((x_j, 0)) - y_j)^2`` of the model's prediction for the example presented alone as a
    query. Returns the test predictions for the prompt's query (alone) after ``i = 0..n``
    steps, ``(B, n+1)``, and the weight changes ``W^l_i - W^l`` ``(B, n+1, m, d+1)`` per block."""
    queries, labels = prompts.example_queries()
    base = [w.detach() for w in first_weights(model)]
    ws = [w.expand(queries.shape[0], *w.shape).clone().requires_grad_(True) for w in base]
    preds, deltas = [], []

    def record():
        with torch.no_grad():
            preds.append(forward_with_weights(model, prompts.query[:, None], ws)[:, -1, -1])
            deltas.append([w.detach() - b for w, b in zip(ws, base)])

    record()
    for j in range(queries.shape[1]):
        pred = forward_with_weights(model, queries[:, j:j + 1], ws)[:, -1, -1]
        grads = torch.autograd.grad(((pred - labels[:, j]) ** 2).sum(), ws)
        with torch.no_grad():
            for w, g in zip(ws, grads):
                w -= lr * g
        record()
    return torch.stack(preds, 1), [torch.stack(d, 1) for d in zip(*deltas)]


def fig3(model, prompts: Prompts, out: Path, *, name: str = "fig3", title: str, config: dict,
         lr: float = 0.01) -> dict:
    """Test loss against the number of examples ``i`` for the implicit update (context of the
    first ``i`` examples) and for explicit finetuning (:func:`finetune`, same examples), and
    the cosine similarity between the implicit ``dW`` and the finetuning change of ``W``
    (all blocks' matrices concatenated)."""
    imp_pred, imp_dw = prefix_analysis(model, prompts)
    ft_pred, ft_dw = finetune(model, prompts, lr)
    target = prompts.target[:, None]
    imp_err = ((imp_pred - target) ** 2).numpy()
    ft_err = ((ft_pred - target) ** 2).numpy()
    cos = _cosine(_flat(imp_dw, 2), _flat(ft_dw, 2)).numpy()
    n1 = imp_err.shape[1]
    i = np.arange(n1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax.plot(i, imp_err.mean(0), lw=2, label="implicit update W + dW(c_1..c_i) (= in-context)")
    ax.plot(i, ft_err.mean(0), lw=2, label=f"explicit SGD finetuning of W (lr {lr}, batch 1)")
    ax.set(yscale="log", xlabel="number of examples i", ylabel="test MSE on the query",
           title=f"{title}: test loss against number of examples")
    ax.legend(fontsize=8)
    _band(bx, i[1:], cos[:, 1:], "cos(dW implicit, dW finetuning): mean, 10-90 %", "C2", lw=2)
    bx.axhline(0, color="gray", lw=0.8)
    bx.set(xlabel="number of examples i", ylabel="cosine similarity", ylim=(-1.05, 1.05),
           title=f"{title}: implicit vs finetuning weight change")
    bx.legend(fontsize=8)
    at = {int(k): {"implicit_loss": float(imp_err[:, k].mean()),
                   "finetune_loss": float(ft_err[:, k].mean()),
                   "cosine_mean": float(cos[:, k].mean())}
          for k in REPORT_COUNTS if k < n1}
    summary = {"config": config, "lr": lr, "at_examples": at}
    rows = [[k, imp_err[:, k].mean(), ft_err[:, k].mean(), cos[:, k].mean(),
             *np.quantile(cos[:, k], [0.1, 0.9])] for k in range(n1)]
    return _write(out, name, fig, ["examples", "implicit_loss", "finetune_loss", "cosine_mean",
                                   "cosine_q10", "cosine_q90"], rows, summary)


# ----------------------------------------------------------------------------------- positions

@torch.no_grad()
def identity_errors(model, tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """Largest error (over prompts) of the identity at every block and position: ``(L, T)``
    arrays for ``"block_token"``/``"block_query"`` (each block's output at position ``t`` from
    its with-context input, against the updated block on the token ``X^l_t`` or the query
    ``X^l_T`` alone) and ``"stack"`` (token ``t`` alone through all updated blocks against the
    stack's output at ``t``, the row of block ``l`` being after block ``l``)."""
    xs = model.block_inputs(tokens)
    out = {}
    for ref in ("token", "query"):
        errs = []
        for l, block in enumerate(model.blocks):
            upd = position_updates(block, xs[l], reference=ref, block_index=l)
            errs.append((apply_update(block, upd) - xs[l + 1]).abs().amax(dim=(0, 2)))
        out[f"block_{ref}"] = torch.stack(errs).numpy()
    ups = stack_updates(model, tokens, every_position=True)
    stack = np.zeros((len(model), tokens.shape[1]))
    for t in range(tokens.shape[1]):
        h = tokens[:, t]
        for l, (block, u) in enumerate(zip(model.blocks, ups)):
            h = apply_update(block, u[:, t], single_token(block, h))
            stack[l, t] = float((h - xs[l + 1][:, t]).abs().max())
    out["stack"] = stack
    return out


def _pair_matrices(dw: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean over prompts of the pairwise cosine and Frobenius distance of updates
    ``dw`` ``(B, P, m, d)``: two ``(P, P)`` arrays."""
    v = dw.flatten(2)
    unit = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    cos = (unit @ unit.transpose(1, 2)).mean(0)
    dist = torch.cdist(v, v).mean(0)
    return cos.numpy(), dist.numpy()


@torch.no_grad()
def sum_spectrum(model, tokens: torch.Tensor, reference: str) -> np.ndarray:
    """Singular values of ``S^l = sum_t dW^l_t`` (updates of every position, against the given
    reference), divided by the largest: ``(B, L, min(m, d))``."""
    ups = stack_updates(model, tokens, reference=reference, every_position=True)
    s = torch.stack([torch.linalg.svdvals(u.dense()[0].sum(1)) for u in ups], dim=1)
    return (s / s[..., :1].clamp_min(torch.finfo(s.dtype).tiny)).numpy()


def positions(models: dict[str, list], prompts: dict[str, Prompts], out: Path, *,
              config: dict) -> dict:
    """The second paper's analysis across positions, for each variant (``"LayerNorm on"``,
    ``"LayerNorm off"``; one model per seed, prompts pooled over seeds):

    - ``positions_identity``: log10 of the largest identity error at every (block, position);
    - ``positions_similarity``: mean cosine similarity and Frobenius distance between the
      updates ``dW^l_t`` of positions ``s, t`` (reference = the query alone), first and last block;
    - ``positions_rank``: singular values of ``sum_t dW^l_t`` relative to the largest, for both
      references, and the numerical rank ``#{sigma_k > RANK_TOL sigma_1}``.
    """
    names = list(models)
    summary: dict = {"config": config, "rank_tolerance": RANK_TOL}
    # identity
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 3.2 * len(names)), squeeze=False)
    rows = []
    for r, key in enumerate(names):
        errs = [identity_errors(m, prompts[key].tokens()) for m in models[key]]
        merged = {k: np.max([e[k] for e in errs], axis=0) for k in errs[0]}
        summary[f"identity_max_error[{key}]"] = {k: float(v.max()) for k, v in merged.items()}
        for c, (k, label) in enumerate([("block_token", "each block, reference = token alone"),
                                        ("block_query", "each block, reference = query alone"),
                                        ("stack", "whole stack, token alone through updated blocks")]):
            im = axes[r, c].imshow(np.log10(np.maximum(merged[k], LOG_FLOOR)), aspect="auto",
                                   cmap="magma", vmin=-18, vmax=-12)
            axes[r, c].set(title=f"{key}: {label}", xlabel="position t", ylabel="block",
                           yticks=range(merged[k].shape[0]))
            fig.colorbar(im, ax=axes[r, c], label="log10 max |error|")
            rows += [[key, k, l, t, merged[k][l, t]] for l in range(merged[k].shape[0])
                     for t in range(merged[k].shape[1])]
    _write(out, "positions_identity", fig, ["variant", "check", "block", "position", "max_error"],
           rows, {"config": config, **{k: v for k, v in summary.items() if k.startswith("identity")}})
    # similarity between positions
    fig, axes = plt.subplots(len(names), 4, figsize=(19, 4.2 * len(names)), squeeze=False)
    rows = []
    for r, key in enumerate(names):
        depth = len(models[key][0])
        for c, l in enumerate(sorted({0, depth - 1})):
            mats = []
            for m in models[key]:
                with torch.no_grad():
                    upd = stack_updates(m, prompts[key].tokens(), reference="query",
                                        every_position=True)[l]
                mats.append(_pair_matrices(upd.dense()[0]))
            cos = np.mean([a for a, _ in mats], axis=0)
            dist = np.mean([b for _, b in mats], axis=0)
            for j, (mat, lab, cmap) in enumerate([(cos, "cosine similarity", "coolwarm"),
                                                  (dist, "Frobenius distance", "viridis")]):
                ax = axes[r, 2 * j + c] if depth > 1 else axes[r, 2 * j]
                kw = {"vmin": -1, "vmax": 1} if j == 0 else {}
                im = ax.imshow(mat, cmap=cmap, **kw)
                ax.set(title=f"{key}, block {l}: {lab}", xlabel="position t", ylabel="position s")
                fig.colorbar(im, ax=ax)
            n = cos.shape[0]
            off = ~np.eye(n, dtype=bool)
            summary[f"position_cosine_offdiag_mean[{key}][block {l}]"] = float(cos[off].mean())
            summary[f"position_cosine_query_vs_context_mean[{key}][block {l}]"] = float(cos[-1, :-1].mean())
            rows += [[key, l, s, t, cos[s, t], dist[s, t]] for s in range(n) for t in range(n)]
    _write(out, "positions_similarity", fig, ["variant", "block", "s", "t", "cosine",
                                              "frobenius_distance"], rows,
           {"config": config, **{k: v for k, v in summary.items() if k.startswith("position_")}})
    # rank of the sum over positions
    fig, axes = plt.subplots(1, len(names), figsize=(9 * len(names), 4.8), squeeze=False)
    rows = []
    for c, key in enumerate(names):
        ax = axes[0, c]
        for ref, ls in (("token", "-"), ("query", "--")):
            spec = np.concatenate([sum_spectrum(m, prompts[key].tokens(), ref)
                                   for m in models[key]])
            ranks = (spec > RANK_TOL).sum(-1)  # (B, L)
            colors = plt.cm.viridis(np.linspace(0, 0.9, spec.shape[1]))
            for l in range(spec.shape[1]):
                k = np.arange(1, spec.shape[2] + 1)
                ax.plot(k, np.maximum(spec[:, l].mean(0), LOG_FLOOR), ls=ls, marker="o",
                        color=colors[l],
                        label=f"block {l}, ref {ref}: rank {ranks[:, l].mean():.2f}")
                rows += [[key, ref, l, kk, spec[:, l, kk - 1].mean(), ranks[:, l].mean()] for kk in k]
            summary[f"rank_of_sum[{key}][reference {ref}]"] = ranks.mean(0).tolist()
        ax.axhline(RANK_TOL, color="red", lw=1, ls=":", label=f"rank threshold {RANK_TOL:g}")
        ax.set(yscale="log", xlabel="singular value index k", ylabel="sigma_k / sigma_1 (mean)",
               xticks=range(1, spec.shape[2] + 1),
               title=f"{key}: spectrum of sum_t dW^l_t\n(solid: reference token, dashed: query)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _write(out, "positions_rank", fig, ["variant", "reference", "block", "k",
                                        "relative_singular_value_mean", "numerical_rank_mean"],
           rows, {"config": config, "rank_tolerance": RANK_TOL,
                  **{k: v for k, v in summary.items() if k.startswith("rank_")}})
    return summary


# -------------------------------------------------------------------------------------- blocks

def blocks(models: dict[str, list], histories: dict[str, list], prompts: dict[str, Prompts],
           out: Path, *, config: dict) -> dict:
    """The second paper's analysis across blocks, per variant:

    - ``blocks_similarity``: mean cosine similarity and Frobenius distance between blocks'
      updates of the query (``stack_updates``, reference = the block's query input alone);
    - ``blocks_norm``: ``||dW^l(C)||_F`` per block over training (validation mean; mean and
      range over seeds).
    """
    names = list(models)
    summary: dict = {"config": config}
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4.3 * len(names)), squeeze=False)
    rows = []
    for r, key in enumerate(names):
        mats = []
        for m in models[key]:
            with torch.no_grad():
                ups = stack_updates(m, prompts[key].tokens())
            mats.append(_pair_matrices(torch.stack([u.dense()[0] for u in ups], 1)))
        cos = np.mean([a for a, _ in mats], axis=0)
        dist = np.mean([b for _, b in mats], axis=0)
        for j, (mat, lab, cmap) in enumerate([(cos, "cosine similarity", "coolwarm"),
                                              (dist, "Frobenius distance", "viridis")]):
            kw = {"vmin": -1, "vmax": 1} if j == 0 else {}
            im = axes[r, j].imshow(mat, cmap=cmap, **kw)
            for (a, b), v in np.ndenumerate(mat):
                axes[r, j].text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=8)
            axes[r, j].set(title=f"{key}: {lab} of dW between blocks", xlabel="block",
                           ylabel="block", xticks=range(len(mat)), yticks=range(len(mat)))
            fig.colorbar(im, ax=axes[r, j])
        L = cos.shape[0]
        summary[f"block_cosine_offdiag_mean[{key}]"] = float(cos[~np.eye(L, dtype=bool)].mean())
        summary[f"block_cosine[{key}]"] = cos.tolist()
        rows += [[key, a, b, cos[a, b], dist[a, b]] for a in range(L) for b in range(L)]
    _write(out, "blocks_similarity", fig, ["variant", "block_a", "block_b", "cosine",
                                           "frobenius_distance"], rows,
           {"config": config, **{k: v for k, v in summary.items() if k.startswith("block_")}})
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.5), squeeze=False)
    rows = []
    for c, key in enumerate(names):
        ax = axes[0, c]
        step = np.array([h["step"] for h in histories[key][0]])
        norms = np.array([[h["update_norm"] for h in hist] for hist in histories[key]])  # (S, E, L)
        colors = plt.cm.viridis(np.linspace(0, 0.9, norms.shape[2]))
        for l in range(norms.shape[2]):
            ax.plot(step, norms[:, :, l].mean(0), color=colors[l], lw=2, label=f"block {l}")
            ax.fill_between(step, norms[:, :, l].min(0), norms[:, :, l].max(0), color=colors[l],
                            alpha=0.15, lw=0)
            rows += [[key, l, s, *norms[:, e, l]] for e, s in enumerate(step)]
        summary[f"final_update_norm[{key}]"] = norms[:, -1].mean(0).tolist()
        summary[f"initial_update_norm[{key}]"] = norms[:, 0].mean(0).tolist()
        ax.set(xlabel="training step", ylabel="mean ||dW^l(C)||_F (validation prompts)",
               title=f"{key}: update norm per block during training\n(mean over "
                     f"{norms.shape[0]} seeds, band = range)")
        ax.legend(fontsize=8)
    n_seeds = len(histories[names[0]])
    _write(out, "blocks_norm", fig, ["variant", "block", "step",
                                     *[f"seed{k}" for k in range(n_seeds)]], rows,
           {"config": config, **{k: v for k, v in summary.items() if "update_norm" in k}})
    return summary
