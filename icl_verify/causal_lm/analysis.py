"""Every measurement of ``icl-verify llm`` on one few-shot prompt ``shot_1 .. shot_K query``
(token ids ``(1, T)``), with the model as ``embed -> stack of adapter blocks -> head``
(:func:`icl_verify.adapters.adapt_causal_lm`): the identity at every layer and position and the
query alone through the updated layers (:mod:`.identity`), per-layer ``||dW||`` at the answer
position, the shots curve and the finetuning comparison (:mod:`.shots`), and optionally the
check through the model's own forward (:mod:`icl_verify.causal_lm.through_model`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..adapters import adapt_causal_lm
from ..errors import DTypeError, NonFiniteError
from .casting import exact_casts
from .offload import onloaded
from .identity import combined_norm, identity_errors, query_alone_check
from .prompts import Prompt
from .shots import finetune_similarity, shots_loss_gradients, shots_updates


@dataclass
class Analysis:
    """Everything ``icl-verify llm`` reports (tensors on the CPU, float64)."""

    tokens: list[str]
    errors: dict[str, torch.Tensor]          # dtype name -> (L, T) relative identity errors
    ratios: dict[str, torch.Tensor]          # dtype name -> (L, T) error / tolerance of the error model
    update_norms: torch.Tensor               # (L,) ||dW|| at the answer position (float64)
    query_check: dict[str, dict]             # dtype name -> query_alone_check
    shot_norms: torch.Tensor                 # (K+1, L)
    shot_increments: torch.Tensor            # (K, L)
    shot_identity: torch.Tensor              # (K+1, L)
    similarity: torch.Tensor | None          # (L,)
    answer: str = ""
    predicted: str = ""
    through_model: dict[str, dict] = field(default_factory=dict)  # dtype name -> through_model_check
    terms: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # dtype -> term -> (L, T)


def analyse(model, tokenizer, prompt: Prompt, *, dtypes=("float32", "float64"), dense: bool = False,
            progress: bool = False, through_model: bool = False) -> Analysis:
    """Run every measurement of the module docstring, in each of ``dtypes`` for the identity
    (the model is cast in place, each time from its values on entry, and handed back with
    those values and dtypes: :func:`icl_verify.causal_lm.casting.exact_casts`); the shots
    curve and the finetuning comparison run in the last dtype. ``through_model``: also the
    check through the model's own forward (:func:`icl_verify.causal_lm.through_model.through_model_check`).
    Weights ``accelerate`` offloads are held loaded meanwhile (:func:`.offload.onloaded`)."""
    with onloaded(model):
        return _analyse(model, tokenizer, prompt, dtypes=dtypes, dense=dense, progress=progress,
                        through_model=through_model)


def _analyse(model, tokenizer, prompt: Prompt, *, dtypes, dense: bool, progress: bool,
             through_model: bool) -> Analysis:
    from .through_model import through_model_check

    device = next(model.parameters()).device
    ids = prompt.ids().to(device)
    errors, ratios, checks, through, terms = {}, {}, {}, {}, {}
    with exact_casts(model) as cast:
        with torch.no_grad():
            for name in dtypes:
                try:
                    cast(getattr(torch, name))
                    lm = adapt_causal_lm(model, ids)
                    terms[name] = {}
                    errors[name], ratios[name], last = identity_errors(lm, ids, dense=dense, progress=progress,
                                                                       terms=terms[name])
                    checks[name] = query_alone_check(lm, ids, last)
                except (RuntimeError, NonFiniteError) as exc:
                    raise DTypeError(f"the model cannot run in {name} on {device}: {exc}") from exc
                if through_model:
                    through[name] = through_model_check(lm, ids, last)
                norms = torch.stack([combined_norm(u).reshape(()) for u in last])
            shot_norms, inc, ident, final = shots_updates(lm, prompt, progress=progress)
        sim = None
        if prompt.shots:
            with torch.enable_grad():
                sim = finetune_similarity(final, shots_loss_gradients(lm, prompt))
    cpu = lambda t: None if t is None else t.detach().double().cpu()  # noqa: E731
    return Analysis(
        tokens=[tokenizer.decode([i]) for i in ids[0].tolist()],
        errors={k: cpu(v) for k, v in errors.items()},
        ratios={k: cpu(v) for k, v in ratios.items()},
        update_norms=cpu(norms), query_check=checks,
        shot_norms=cpu(shot_norms), shot_increments=cpu(inc), shot_identity=cpu(ident), similarity=cpu(sim),
        answer=tokenizer.decode(prompt.answer[:1]) if prompt.answer else "",
        predicted=tokenizer.decode([checks[dtypes[-1]]["argmax_full"]]),
        through_model=through,
        terms={k: {n: cpu(t) for n, t in v.items()} for k, v in terms.items()},
    )
