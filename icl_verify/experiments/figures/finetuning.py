"""Fig 3 of the first paper: test loss against the number of examples for the implicit update
and for explicit SGD finetuning of ``W``, and the cosine similarity of the two weight changes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...similarity import cosine
from ..model import first_weights, forward_with_weights
from ..task import Prompts
from .increments import prefix_analysis
from .output import band, flat, plt, write_figure

#: example counts at which Fig 3 reports its numbers
REPORT_COUNTS = (0, 1, 2, 5, 10, 20, 50)


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
    cos = cosine(flat(imp_dw, 2), flat(ft_dw, 2)).numpy()
    n1 = imp_err.shape[1]
    i = np.arange(n1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax.plot(i, imp_err.mean(0), lw=2, label="implicit update W + dW(c_1..c_i) (= in-context)")
    ax.plot(i, ft_err.mean(0), lw=2, label=f"explicit SGD finetuning of W (lr {lr}, batch 1)")
    ax.set(yscale="log", xlabel="number of examples i", ylabel="test MSE on the query",
           title=f"{title}: test loss against number of examples")
    ax.legend(fontsize=8)
    band(bx, i[1:], cos[:, 1:], "cos(dW implicit, dW finetuning): mean, 10-90 %", "C2", lw=2)
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
    return write_figure(out, name, fig, ["examples", "implicit_loss", "finetune_loss", "cosine_mean",
                                         "cosine_q10", "cosine_q90"], rows, summary)
