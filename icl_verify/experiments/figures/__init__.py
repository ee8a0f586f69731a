"""The papers' figures and the generalisation's analysis, each written as PNG + CSV + JSON,
one module per figure.

Every public ``fig*`` function takes trained models (and their training histories), draws one
figure, writes ``<name>.png``, ``<name>.csv`` and ``<name>.json`` (configuration and summary
numbers) into ``out`` and returns the summary dict.

- :func:`fig1` (:mod:`.training_loss`): validation loss of the in-context and the
  implicit-update predictions during training, and their absolute difference (log axis).
- :func:`fig2` (:mod:`.increments`): ``||dW_{i+1} - dW_i||_F`` against context length ``i``
  (log-log) with an ``O(1/i)`` reference line and a least-squares slope.
- :func:`fig3` (:mod:`.finetuning`): test loss against number of examples for the implicit
  update and for explicit SGD finetuning of ``W`` alone, and the cosine similarity of the two
  weight changes.
- :func:`positions` (:mod:`.across_positions`): the identity at every position and block,
  position-by-position similarity of the updates, and the rank of their sum over positions.
- :func:`blocks` (:mod:`.across_blocks`): block-by-block similarity of the updates and the
  update norm per block over training.
"""
from .across_blocks import blocks
from .across_positions import RANK_TOL, identity_errors, positions, sum_spectrum
from .finetuning import REPORT_COUNTS, fig3, finetune
from .increments import fig2, fit_slope, increment_norms_per_block, prefix_analysis
from .output import LOG_FLOOR
from .training_loss import fig1

__all__ = [
    "blocks", "RANK_TOL", "identity_errors", "positions", "sum_spectrum", "REPORT_COUNTS", "fig3",
    "finetune", "fig2", "fit_slope", "increment_norms_per_block", "prefix_analysis", "LOG_FLOOR",
    "fig1",
]
