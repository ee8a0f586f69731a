"""The second paper's analysis across positions: the identity at every block and position,
the similarity of the updates of different positions, and the rank of their sum."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ... import claims
from ...updates import apply_update, single_token, stack_updates
from ..task import Prompts
from .output import LOG_FLOOR, draw_pairs, pair_matrices, plt, write_figure

#: relative singular-value threshold of the numerical rank: ``#{k : sigma_k > RANK_TOL sigma_1}``
RANK_TOL = 1e-8


@torch.no_grad()
def identity_errors(model, tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """Largest error (over prompts) of the identity at every block and position: ``(L, T)``
    arrays for ``"block_token"``/``"block_query"`` (:func:`icl_verify.claims.positions`: the
    norm of the difference between each block's output at position ``t`` from its with-context
    input and the updated block on the token ``X^l_t`` or the query ``X^l_T`` alone) and
    ``"stack"`` (largest absolute difference: (token ``t`` alone through all updated blocks against the
    stack's output at ``t``, the row of block ``l`` being after block ``l``)."""
    xs = model.block_inputs(tokens)
    out = {}
    for ref in ("token", "query"):
        errs = [claims.positions(block, xs[l], ref).error.amax(0) for l, block in enumerate(model.blocks)]
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
    summary: dict = {"config": config, "rank_tolerance": RANK_TOL}
    for figure in (_identity_figure, _similarity_figure, _rank_figure):
        summary.update(figure(models, prompts, out, config))
    return summary


IDENTITY_PANELS = [("block_token", "each block, reference = token alone"),
                   ("block_query", "each block, reference = query alone"),
                   ("stack", "whole stack, token alone through updated blocks")]


def _identity_figure(models, prompts, out: Path, config: dict) -> dict:
    """``positions_identity``: one heat map per (variant, check) of the largest identity error."""
    names, summary, rows = list(models), {}, []
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 3.2 * len(names)), squeeze=False)
    for r, key in enumerate(names):
        errs = [identity_errors(m, prompts[key].tokens()) for m in models[key]]
        merged = {k: np.max([e[k] for e in errs], axis=0) for k in errs[0]}
        summary[f"identity_max_error[{key}]"] = {k: float(v.max()) for k, v in merged.items()}
        for c, (k, label) in enumerate(IDENTITY_PANELS):
            im = axes[r, c].imshow(np.log10(np.maximum(merged[k], LOG_FLOOR)), aspect="auto",
                                   cmap="magma", vmin=-18, vmax=-12)
            axes[r, c].set(title=f"{key}: {label}", xlabel="position t", ylabel="block",
                           yticks=range(merged[k].shape[0]))
            fig.colorbar(im, ax=axes[r, c], label="log10 max error")
            rows += [[key, k, l, t, merged[k][l, t]] for l in range(merged[k].shape[0])
                     for t in range(merged[k].shape[1])]
    write_figure(out, "positions_identity", fig, ["variant", "check", "block", "position", "max_error"],
                 rows, {"config": config, **summary})
    return summary


def _similarity_figure(models, prompts, out: Path, config: dict) -> dict:
    """``positions_similarity``: cosine and distance between the updates of two positions, first
    and last block."""
    names, summary, rows = list(models), {}, []
    fig, axes = plt.subplots(len(names), 4, figsize=(19, 4.2 * len(names)), squeeze=False)
    for r, key in enumerate(names):
        depth = len(models[key][0])
        for c, l in enumerate(sorted({0, depth - 1})):
            with torch.no_grad():
                dws = [stack_updates(m, prompts[key].tokens(), reference="query", every_position=True)[l].dense()[0]
                       for m in models[key]]
            cos, dist = pair_matrices(dws)
            pair = (axes[r, c], axes[r, 2 + c]) if depth > 1 else (axes[r, 0], axes[r, 2])
            draw_pairs(fig, pair, cos, dist, f"{key}, block {l}: {{what}}", xlabel="position t",
                       ylabel="position s")
            n = cos.shape[0]
            off = ~np.eye(n, dtype=bool)
            summary[f"position_cosine_offdiag_mean[{key}][block {l}]"] = float(cos[off].mean())
            summary[f"position_cosine_query_vs_context_mean[{key}][block {l}]"] = float(cos[-1, :-1].mean())
            rows += [[key, l, s, t, cos[s, t], dist[s, t]] for s in range(n) for t in range(n)]
    write_figure(out, "positions_similarity", fig, ["variant", "block", "s", "t", "cosine",
                                                    "frobenius_distance"], rows, {"config": config, **summary})
    return summary


def _rank_figure(models, prompts, out: Path, config: dict) -> dict:
    """``positions_rank``: the relative spectrum of ``sum_t dW^l_t`` and its numerical rank."""
    names, summary, rows = list(models), {}, []
    fig, axes = plt.subplots(1, len(names), figsize=(9 * len(names), 4.8), squeeze=False)
    for c, key in enumerate(names):
        ax = axes[0, c]
        for ref, ls in (("token", "-"), ("query", "--")):
            spec = np.concatenate([sum_spectrum(m, prompts[key].tokens(), ref) for m in models[key]])
            ranks = (spec > RANK_TOL).sum(-1)  # (B, L)
            colors = plt.cm.viridis(np.linspace(0, 0.9, spec.shape[1]))
            k = np.arange(1, spec.shape[2] + 1)
            for l in range(spec.shape[1]):
                ax.plot(k, np.maximum(spec[:, l].mean(0), LOG_FLOOR), ls=ls, marker="o", color=colors[l],
                        label=f"block {l}, ref {ref}: rank {ranks[:, l].mean():.2f}")
                rows += [[key, ref, l, kk, spec[:, l, kk - 1].mean(), ranks[:, l].mean()] for kk in k]
            summary[f"rank_of_sum[{key}][reference {ref}]"] = ranks.mean(0).tolist()
        ax.axhline(RANK_TOL, color="red", lw=1, ls=":", label=f"rank threshold {RANK_TOL:g}")
        ax.set(yscale="log", xlabel="singular value index k", ylabel="sigma_k / sigma_1 (mean)", xticks=k,
               title=f"{key}: spectrum of sum_t dW^l_t\n(solid: reference token, dashed: query)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    write_figure(out, "positions_rank", fig, ["variant", "reference", "block", "k",
                                              "relative_singular_value_mean", "numerical_rank_mean"],
                 rows, {"config": config, "rank_tolerance": RANK_TOL, **summary})
    return summary
