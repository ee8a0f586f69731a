"""``icl-verify reproduce {fig1,fig2,fig3,positions,blocks,all} --out DIR [--seed S] [--quick]``.

Trains the in-context regression models (or reloads them from ``DIR/checkpoints`` when trained
with the same configuration), draws the papers' figures and writes PNG + CSV + JSON per figure
and ``summary.json`` into ``DIR`` (:mod:`icl_verify.experiments.reproduction`).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from . import non_negative_int, positive_float, positive_int, show_progress
from ..experiments.reproduction import FIGURES, QUICK, ReproductionSizes, reproduce

#: fewest context examples: Fig 2 fits a slope to the increments ``i = 1..n-1`` (two points at least)
MIN_EXAMPLES = 3


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="train the in-context regression models and draw the papers' figures",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figure", choices=(*FIGURES, "all"), help="which figure(s) to draw")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="base seed of models and prompts")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (seconds)")
    p.add_argument("--n", type=positive_int, default=None,
                   help=f"context examples per prompt (at least {MIN_EXAMPLES}; default 50, 12 with --quick)")
    p.add_argument("--heads", type=positive_int, default=None,
                   help=f"attention heads, a divisor of the token width d+1 = "
                        f"{ReproductionSizes.d + 1} (default 3)")
    p.add_argument("--finetune-lr", type=positive_float, default=None,
                   help="Fig 3's SGD learning rate (default 0.01)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: the tensors are tiny)")
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars (also off with TQDM_DISABLE=1 or when stderr is not a terminal)")
    p.set_defaults(run=run, parser=p)


def sizes_from(args: argparse.Namespace) -> ReproductionSizes:
    """The run's :class:`ReproductionSizes` (``--quick`` or the papers', then ``--n``, ``--heads``,
    ``--finetune-lr``); ``parser.error`` on sizes the models cannot take."""
    sizes = QUICK if args.quick else ReproductionSizes()
    if args.n is not None:
        if args.n < MIN_EXAMPLES:
            args.parser.error(f"--n {args.n}: need at least {MIN_EXAMPLES} context examples")
        sizes = replace(sizes, n=args.n)
    if args.heads is not None:
        if (sizes.d + 1) % args.heads:
            args.parser.error(f"--heads {args.heads} does not divide the token width d+1 = {sizes.d + 1}")
        sizes = replace(sizes, heads=args.heads)
    if args.finetune_lr is not None:
        sizes = replace(sizes, finetune_lr=args.finetune_lr)
    return sizes


def run(args: argparse.Namespace) -> int:
    sizes = sizes_from(args)
    if args.out.exists() and not args.out.is_dir():
        args.parser.error(f"--out {args.out} exists and is not a folder")
    todo = FIGURES if args.figure == "all" else (args.figure,)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        summary = reproduce(todo, sizes, args.out, seed=args.seed,
                            progress=show_progress(args.no_progress), log=print)
        _report(summary)
    finally:
        torch.set_num_threads(threads)
    return 0


def _report(summary: dict) -> None:
    """Key numbers on stdout."""
    if "fig1" in summary:
        s = summary["fig1"]
        print(f"  Fig 1: largest |loss gap| {s['max_loss_gap']:.2e}, largest |prediction gap| "
              f"{s['max_prediction_gap']:.2e}; final loss {s['final_icl_loss'][0]:.4f}")
    if "fig2" in summary:
        print(f"  Fig 2: slope on log axes {summary['fig2']['slope_trained'][0]:.3f} "
              f"(initialisation {summary['fig2']['slope_initial'][0]:.3f})")
    if "fig3" in summary:
        for k, v in summary["fig3"]["at_examples"].items():
            print(f"  Fig 3 at {k:>2} examples: implicit {v['implicit_loss']:.4f}, finetuning "
                  f"{v['finetune_loss']:.4f}, cosine {v['cosine_mean']:.3f}")
    print(f"  total {summary['seconds']:.1f} s")
