"""Fig 1 of the first paper: validation loss of the in-context prediction and of the
implicit-update prediction during training, and their difference."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .output import LOG_FLOOR, plt, write_figure


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
    return write_figure(out, name, fig, ["seed", "step", "icl_loss", "implicit_loss", "loss_gap",
                                         "max_prediction_gap"], rows, summary)
