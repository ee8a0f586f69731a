"""The shots curve and the finetuning comparison on a few-shot :class:`~.prompts.Prompt`.

``dW_l(k)`` turns the zero-shot prompt's computation at the last position into the ``k``-shot
one (the general form of docs/theory.md §2, reference = query without shots, the same for every
``k``); ``||dW_l(k+1) - dW_l(k)||`` against ``k``. ``dW_l(K)`` is compared by cosine with the
descent direction ``-grad_{W_l} L`` of the shots' loss (each shot a separate sequence,
cross-entropy on its answer tokens), over all first matrices of layer ``l`` (gate and up for
Llama).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .. import claims
from ..adapters import AdaptedLM
from ..similarity import cosine
from ..updates import general_update
from .identity import combined_norm
from .prompts import Prompt


def shots_updates(lm: AdaptedLM, prompt: Prompt, *, progress: bool = False):
    """``dW_l(k)`` for ``k = 0..K`` shots (reference: the zero-shot prompt at its last position).

    Returns ``(norms (K+1, L), increments (K, L), identity (K+1, L), updates_K)``:
    ``||dW_l(k)||``, ``||dW_l(k+1) - dW_l(k)||``, the relative error of each update's identity
    (:func:`icl_verify.claims.identity`, factored form), and the ``K``-shot updates (one
    :class:`~icl_verify.updates.ImplicitUpdate` per layer).
    """
    from tqdm.auto import tqdm

    def last(k: int):
        return [dec.at(-1) for dec in lm.stack.decompositions(lm.embed(prompt.ids(k)))[1]]

    ref = last(0)
    weights = [b.first_weights() for b in lm.stack.blocks]
    norms, ident, lefts, final = [], [], [], None
    for k in tqdm(range(len(prompt.shots) + 1), desc="shots", disable=not progress, leave=False):
        ups = [general_update(w, t, r, block=l) for l, (w, t, r) in enumerate(zip(weights, last(k), ref))]
        norms.append(torch.stack([combined_norm(u).reshape(()) for u in ups]))
        checks = [claims.identity(block, u, dense=False) for block, u in zip(lm.stack.blocks, ups)]
        ident.append(torch.stack([(c.error / c.scale).reshape(()) for c in checks]))
        lefts.append([torch.cat([v.reshape(-1) for v in u.left]) for u in ups])
        final = ups
    rnorm = torch.stack([u.right.norm() for u in final])
    inc = torch.stack([torch.stack([(b - a).norm() for a, b in zip(lefts[k], lefts[k + 1])]) * rnorm
                       for k in range(len(lefts) - 1)]) if len(lefts) > 1 else torch.zeros(0, len(final), device=rnorm.device)
    return torch.stack(norms), inc, torch.stack(ident), final


def shots_loss_gradients(lm: AdaptedLM, prompt: Prompt) -> list[list[torch.Tensor]]:
    """``grad_{W_lk} L`` for every layer ``l`` and first matrix ``k`` ``(m_k, d_z)``, with ``L`` the
    summed cross-entropy of every shot's answer tokens, each shot a separate sequence."""
    ws = [[w.detach().clone().requires_grad_(True) for w in b.first_weights()] for b in lm.stack.blocks]
    loss = 0.0
    for ids, mask in prompt.shot_sequences():
        x = lm.embed(ids)
        for block, wl in zip(lm.stack.blocks, ws):
            dec = block.decompose(x)
            hs = [F.linear(dec.z, w, b) for w, (_, b) in zip(wl, block.first_layers())]
            x = block.output(hs, dec.s)
        logits = lm.head(x)[0, :-1]
        target, keep = ids[0, 1:].to(logits.device), mask[0, 1:].to(logits.device)
        loss = loss + F.cross_entropy(logits[keep], target[keep], reduction="sum")
    flat = [w for wl in ws for w in wl]
    grads = torch.autograd.grad(loss, flat)
    out, i = [], 0
    for wl in ws:
        out.append(list(grads[i: i + len(wl)]))
        i += len(wl)
    return out


def finetune_similarity(updates, grads) -> torch.Tensor:
    """Cosine (:func:`icl_verify.similarity.cosine`) between each layer's implicit update
    ``dW_l = [u_k r^T]_k`` and the descent direction ``-grad_l``, over all its first matrices
    flattened and concatenated: ``(L,)``, summed in float64 (in float32 the sums over the
    ``m_k d_z`` entries lose small cosines to rounding)."""
    flat = lambda ts: torch.cat([t.reshape(-1).double() for t in ts])  # noqa: E731
    return torch.stack([cosine(flat(u.dense()), -flat(g)) for u, g in zip(updates, grads)])
