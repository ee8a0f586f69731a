"""The identity of docs/theory.md §4 on a prompt ``ids`` ``(1, T)`` at every layer ``l`` and
position ``t`` of an adapted model (reference: token ``t``'s layer input alone), and the query's
last token alone through every layer updated at the last position, against the full prompt's
next-token logits (:func:`icl_verify.updates.run_stack_updated`)."""
from __future__ import annotations

import torch

from .. import claims
from ..adapters import AdaptedLM
from ..error_model import RATIO_TERMS
from ..updates import ImplicitUpdate, block_forward, position_updates, run_stack_updated


def combined_norm(update: ImplicitUpdate) -> torch.Tensor:
    """``||dW||`` over all first matrices of a block (Frobenius of the concatenation): ``(...)``."""
    return update.norms().square().sum(-1).sqrt()


def identity_errors(lm: AdaptedLM, ids: torch.Tensor, *, dense: bool = False, progress: bool = False,
                    terms: dict | None = None):
    """Identity errors at every layer and position (:func:`icl_verify.claims.identity`, the
    check every other command uses), and the last position's updates.

    One pass over the layers: block ``l``'s forward pass (decomposition, pre-activations, output)
    is the target side of its check and gives block ``l + 1`` its input.

    Returns ``(errors, ratios, updates)``: ``errors[l, t] = ||y_C - y_upd|| / ||y_C||`` and
    ``ratios[l, t]`` that error over the error model's tolerance, both ``(L, T)`` (reference: the
    token's layer input alone), and ``updates[l]`` the update of layer ``l`` at the last position
    (leading dims ``(1,)``). The last position always uses the materialised ``W + dW``; the
    others too with ``dense=True``, else the factored form ``W z + u (r . z)`` (the same matrix,
    without a ``(m, d)`` copy per position). ``terms``, if given, receives ``(L, T)`` tensors: the
    tolerance and its terms (:func:`icl_verify.error_model.identity.identity_bound`), relative to ``||y_C||``
    like the errors.
    """
    from tqdm.auto import tqdm

    errors, ratios, last = [], [], []
    blocks = enumerate(lm.stack.blocks)
    with torch.no_grad():
        x = lm.embed(ids)
        for l, block in tqdm(blocks, total=len(lm.stack), desc="identity", disable=not progress, leave=False):
            # one pass: the target side at every position is the block's forward pass, whose
            # output is the next block's input
            dec = block.decompose(x)
            hs_t, y_t = block_forward(block, dec)
            upd = position_updates(block, x, reference="token", block_index=l, decomposition=dec)
            at = torch.full(upd.right.shape[:-1], dense, dtype=torch.bool, device=upd.right.device)
            at[:, -1] = True  # the matrix the query-alone run uses
            check = claims.identity(block, upd, dense=at, target_side=(hs_t, y_t))
            x = y_t
            err, tol, scale = check.error[0], check.tolerance[0], check.scale[0]
            errors.append(err / scale)
            ratios.append(err / tol)
            last.append(upd[:, -1])
            if terms is not None:
                parts = {"tolerance": tol, **{n: t[0] for n, t in check.terms.items()}}
                for n, t in parts.items():
                    terms.setdefault(n, []).append(t if n in RATIO_TERMS else t / scale)
    if terms is not None:
        terms.update({n: torch.stack(ts) for n, ts in terms.items()})
    return torch.stack(errors), torch.stack(ratios), last


def query_alone_check(lm: AdaptedLM, ids: torch.Tensor, updates) -> dict:
    """The query's last token alone through every updated layer, against the unmodified model's
    next-token logits for the full prompt."""
    x0 = lm.embed(ids)[:, -1]
    logits_upd = lm.head(run_stack_updated(lm.stack, x0, updates))[0]
    logits_full = lm.model(ids).logits[0, -1].to(device=logits_upd.device, dtype=logits_upd.dtype)
    return {
        "logits_max_abs_diff": float((logits_upd - logits_full).abs().max()),
        "logits_rel_diff": float((logits_upd - logits_full).norm() / logits_full.norm()),
        "argmax_full": int(logits_full.argmax()),
        "argmax_updated": int(logits_upd.argmax()),
        "same_prediction": bool(logits_full.argmax() == logits_upd.argmax()),
    }
