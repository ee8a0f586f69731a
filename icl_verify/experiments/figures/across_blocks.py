"""The second paper's analysis across blocks: the similarity of the blocks' updates and the
update norm of every block during training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...updates import stack_updates
from ..task import Prompts
from .output import draw_pairs, pair_matrices, plt, write_figure


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
        dws = []
        for m in models[key]:
            with torch.no_grad():
                ups = stack_updates(m, prompts[key].tokens())
            dws.append(torch.stack([u.dense()[0] for u in ups], 1))
        cos, dist = pair_matrices(dws)
        ticks = range(len(cos))
        draw_pairs(fig, axes[r], cos, dist, f"{key}: {{what}} of dW between blocks", annotate=True,
                   xlabel="block", ylabel="block", xticks=ticks, yticks=ticks)
        L = cos.shape[0]
        summary[f"block_cosine_offdiag_mean[{key}]"] = float(cos[~np.eye(L, dtype=bool)].mean())
        summary[f"block_cosine[{key}]"] = cos.tolist()
        rows += [[key, a, b, cos[a, b], dist[a, b]] for a in range(L) for b in range(L)]
    write_figure(out, "blocks_similarity", fig, ["variant", "block_a", "block_b", "cosine",
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
    write_figure(out, "blocks_norm", fig, ["variant", "block", "step",
                                           *[f"seed{k}" for k in range(n_seeds)]], rows,
                 {"config": config, **{k: v for k, v in summary.items() if "update_norm" in k}})
    return summary
