"""What every figure module shares: writing PNG + CSV + JSON, the mean-and-band plot, and the
comparison of updates (flattening over blocks, pairwise cosine and distance)."""
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

from ...similarity import cosine  # noqa: E402

#: plotted in place of exact zeros on log axes
LOG_FLOOR = 1e-18


def write_figure(out: Path, name: str, fig, header: Sequence[str], rows: Sequence[Sequence],
           summary: dict) -> dict:
    """Save ``fig`` as ``out/<name>.png``, ``rows`` under ``header`` as ``<name>.csv`` and
    ``summary`` as ``<name>.json``; return ``summary``."""
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


def band(ax, x, values: np.ndarray, label: str, color, **kw):
    """Mean line and 10-90 % band of ``values`` ``(samples, len(x))``."""
    mean = values.mean(0)
    lo, hi = np.quantile(values, [0.1, 0.9], axis=0)
    ax.plot(x, mean, color=color, label=label, **kw)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    return mean


def flat(dws: Sequence[torch.Tensor], lead: int) -> torch.Tensor:
    """Concatenate matrices ``(*lead, m, d)`` over blocks into vectors ``(*lead, K)``."""
    return torch.cat([w.flatten(lead) for w in dws], dim=-1)


def pair_matrices(dws: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The pairwise cosine and Frobenius distance of the updates ``dw`` ``(B, P, m, d)`` of each
    model in ``dws``, averaged over prompts and models: two ``(P, P)`` arrays."""
    cos, dist = [], []
    for dw in dws:
        v = dw.flatten(2)
        cos.append(cosine(v[:, :, None], v[:, None, :]).mean(0).numpy())
        dist.append(torch.cdist(v, v).mean(0).numpy())
    return np.mean(cos, axis=0), np.mean(dist, axis=0)


def draw_pairs(fig, axes, cos: np.ndarray, dist: np.ndarray, title: str, *, annotate: bool = False,
               **labels) -> None:
    """Heat maps of ``cos`` (on ``axes[0]``, from -1 to 1) and ``dist`` (on ``axes[1]``) from
    :func:`pair_matrices`; ``title`` holds ``{what}``; ``annotate`` writes each value in its cell."""
    for ax, mat, what, cmap, kw in ((axes[0], cos, "cosine similarity", "coolwarm", {"vmin": -1, "vmax": 1}),
                                    (axes[1], dist, "Frobenius distance", "viridis", {})):
        im = ax.imshow(mat, cmap=cmap, **kw)
        if annotate:
            for (a, b), v in np.ndenumerate(mat):
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set(title=title.format(what=what), **labels)
        fig.colorbar(im, ax=ax)
