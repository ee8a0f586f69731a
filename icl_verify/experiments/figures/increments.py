"""Fig 2 of the first paper: ``||dW_{i+1} - dW_i||_F`` against the context length ``i``, from
the updates of the query after every prefix of the context."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...dynamics import increment_norms, prefix_updates
from ...updates import apply_update, run_stack_updated, stack_updates
from ..task import Prompts
from .output import band, plt, write_figure


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
        mean = band(ax, i, inc[:, :, l], "trained: mean, 10-90 %", "C0", lw=2)
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
    return write_figure(out, name, fig, ["block", "i", "mean", "q10", "q90", "mean_initial"], rows,
                        summary)
