"""``icl-verify verify``: every claim on seeded random instances of every registered layer in
every composition (and stacks), and on tiny real architectures (by default a subset in which
every architecture tag occurs; ``--all-architectures`` for every one), in float64 and float32
(:mod:`icl_verify.sweep` runs them);
prints the worst case per claim and every failure, optionally writes every row as JSON."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from . import non_negative_int, positive_int, show_progress
from ..adapters import list_architectures
from ..blocks import list_compositions
from ..layers import list_layers
from ..sweep import ARCHITECTURE, DTYPES, Row, InstanceSizes, covering_architectures, run_verify

#: largest ``--d`` / ``--context`` / ``--batch`` / ``--depth``: the checks form dense ``d x d``
#: Jacobians per entry, so larger instances run for hours rather than seconds
LIMITS = {"d": 256, "context": 512, "batch": 64, "depth": 64}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check every claim on every registered layer and composition",
                       description=__doc__)
    p.add_argument("--seed", type=non_negative_int, default=0, help="base seed (default 0)")
    p.add_argument("--d", type=positive_int, default=8,
                   help="model width, 1 to %d (default 8; each layer takes its largest allowed "
                        "width up to this)" % LIMITS["d"])
    p.add_argument("--context", type=positive_int, default=6,
                   help="context length n, 1 to %d (default 6)" % LIMITS["context"])
    p.add_argument("--batch", type=positive_int, default=2,
                   help="prompts per instance, 1 to %d (default 2)" % LIMITS["batch"])
    p.add_argument("--depth", type=positive_int, default=4,
                   help="blocks per stack, 1 to %d (default 4)" % LIMITS["depth"])
    p.add_argument("--layer", action="append", metavar="PATTERN",
                   help="only layers (and real architectures) matching this wildcard (repeatable)")
    p.add_argument("--composition", action="append", metavar="PATTERN",
                   help="only compositions matching this wildcard (repeatable); 'transformers' "
                        "selects the real architectures")
    p.add_argument("--dtype", action="append", choices=list(DTYPES),
                   help="dtypes (repeatable; default float64 and float32)")
    p.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    p.add_argument("--full", action="store_true", help="print every row, not only failures")
    p.add_argument("--jobs", type=non_negative_int, default=0,
                   help="worker processes, each checking whole instances with one thread (default 0: one "
                        "per CPU core; 1: in this process)")
    p.add_argument("--threads", type=non_negative_int, default=1,
                   help="torch threads (default 1: the instances are tiny, and more threads than free "
                        "cores spin instead of working; 0: torch's choice)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (also off with TQDM_DISABLE=1 or when stderr is not a terminal)")
    p.add_argument("--no-architectures", action="store_true",
                   help="skip the tiny real architectures (transformers adapters)")
    p.add_argument("--all-architectures", action="store_true",
                   help="check every registered architecture; without it and without --layer, a subset "
                        "in which every architecture tag occurs (the layouts the adapters know)")
    p.set_defaults(run=main, parser=p)


def _select(names: list[str], patterns: list[str] | None) -> list[str]:
    """``names`` matching any of the wildcard ``patterns`` (all of them without patterns)."""
    if not patterns:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _selection(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    """``(layers, compositions, architectures)`` chosen by ``--layer`` and ``--composition``;
    ``parser.error`` on a pattern that matches nothing."""
    error = args.parser.error
    if args.no_architectures and args.all_architectures:
        error("--no-architectures and --all-architectures exclude each other")
    all_compositions = list_compositions() + [ARCHITECTURE]
    everything = list(dict.fromkeys(list_layers() + list_architectures()))  # no architectures without transformers
    for pattern in args.composition or ():
        if not _select(all_compositions, [pattern]):
            error(f"--composition {pattern!r} matches no composition; choose from "
                  f"{', '.join(all_compositions)}")
    for pattern in args.layer or ():
        if not _select(everything, [pattern]):
            error(f"--layer {pattern!r} matches no layer or architecture; choose from "
                  f"{', '.join(everything)}")
    compositions = _select(all_compositions, args.composition)
    layers = _select(list_layers(), args.layer) if len(compositions) > (ARCHITECTURE in compositions) else []
    archs = [] if args.no_architectures or ARCHITECTURE not in compositions else \
        _select(list_architectures(), args.layer)
    if archs and not args.layer and not args.all_architectures:
        archs = covering_architectures(archs)
    if not layers and not archs:
        error(f"nothing matches --layer {' '.join(args.layer or ['*'])} --composition "
              f"{' '.join(args.composition or ['*'])}"
              f"{' with --no-architectures' if args.no_architectures else ''}; layers: "
              f"{', '.join(list_layers())}; architectures: {', '.join(list_architectures()) or 'none'}; "
              f"compositions: {', '.join(all_compositions)}")
    return layers, [c for c in compositions if c != ARCHITECTURE], archs


def format_table(rows: list[Row], full: bool = False) -> str:
    """Summary per (dtype, claim), then failures (or every row with ``full``)."""
    lines = []
    header = f"{'dtype':8} {'layer':24} {'composition':12} {'claim':17} {'worst error':>11} {'tolerance':>10} {'rel. error':>10} {'err/tol':>8}  pass"
    outside = [r for r in rows if r.outside]
    rows = [r for r in rows if not r.outside]
    shown = rows if full else [r for r in rows if not r.passed]
    if shown:
        lines += [header, "-" * len(header)]
        for r in shown:
            lines.append(f"{r.dtype:8} {r.layer:24} {r.composition:12} {r.claim:17} {r.error:11.3e} "
                         f"{r.tolerance:10.3e} {r.relative_error:10.3e} {r.ratio:8.3g}  {'yes' if r.passed else 'NO'}")
        lines.append("")
    lines.append("Worst case per claim (over every layer and composition):")
    head = f"{'dtype':8} {'claim':17} {'max rel. error':>14} {'worst err/tol':>13} {'where (layer / composition)':40} {'checks':>6} {'failed':>6}"
    lines += [head, "-" * len(head)]
    keys = sorted({(r.dtype, r.claim) for r in rows}, key=lambda k: (list(DTYPES).index(k[0]), k[1]))
    for dt, claim in keys:
        group = [r for r in rows if r.dtype == dt and r.claim == claim]
        worst = max(group, key=lambda r: r.ratio)
        lines.append(f"{dt:8} {claim:17} {max(r.relative_error for r in group):14.3e} {worst.ratio:13.3g} "
                     f"{worst.layer + ' / ' + worst.composition:40} {len(group):6d} {sum(not r.passed for r in group):6d}")
    if outside:
        lines += ["", f"Not checked: {len(outside)} instances outside the claims' hypotheses (finite values, "
                      "z_r != 0) in their dtype:"]
        lines += [f"{r.dtype:8} {r.layer:24} {r.composition:12} {r.claim:17} {r.outside}" for r in outside]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    for name, limit in LIMITS.items():
        if getattr(args, name) > limit:
            args.parser.error(f"--{name} {getattr(args, name)} is above {limit}")
    if args.json:
        path = Path(args.json)
        if path.is_dir() or not path.parent.is_dir():
            args.parser.error(f"--json {path}: cannot write a file there "
                              f"({'a folder' if path.is_dir() else 'no folder ' + str(path.parent)})")
    layers, compositions, archs = _selection(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = InstanceSizes(args.d, args.context, args.batch, args.depth)
    rows = run_verify(layers, compositions, args.dtype or ["float64", "float32"], sizes, seed=args.seed,
                      progress=show_progress(args.no_progress), architectures=archs,
                      processes=args.jobs or os.cpu_count() or 1)
    print(format_table(rows, full=args.full))
    failed = sum(r.failed for r in rows)
    outside = sum(bool(r.outside) for r in rows)
    print(f"\n{len(rows) - failed - outside} passed, {failed} failed"
          + (f", {outside} not checked (outside the hypotheses)" if outside else ""))
    if args.json:
        payload = {"sizes": asdict(sizes), "seed": args.seed, "rows": [asdict(r) for r in rows]}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 1 if failed else 0
