"""``icl-verify verify``: every claim of DESIGN §2-§4 on seeded random instances of every
registered layer in every composition (and stacks), in float64 and float32 (and, on request,
bfloat16 and float16)."""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from tqdm import tqdm

from . import claims
from .dynamics import prefix_updates
from .blocks import build_block, build_stack, list_compositions
from .adapters import get_architecture, list_architectures
from .layers import get_layer, list_layers

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
ARCHITECTURE = "transformers"  # composition column of the real architectures


@dataclass(frozen=True)
class Row:
    """One claim on one (dtype, layer, composition): the entry with the worst error/tolerance."""

    dtype: str
    layer: str
    composition: str
    claim: str
    error: float
    tolerance: float
    relative_error: float
    ratio: float
    passed: bool
    terms: dict[str, float] = field(default_factory=dict)  # the tolerance's terms at that entry


@dataclass(frozen=True)
class Sizes:
    d: int = 8
    context: int = 6
    batch: int = 2
    depth: int = 4


def _width(layer: str, want: int) -> tuple[int, int]:
    """The largest allowed width <= ``want`` (at least the smallest allowed), with its heads."""
    info = get_layer(layer)
    heads = max(h for h in info.heads if info.valid_dims(h))
    dims = info.valid_dims(heads)
    below = [d for d in dims if d <= want]
    return (below[-1] if below else dims[0]), heads


def _claims(block, stack, context: torch.Tensor, query: torch.Tensor, part: torch.Tensor) -> Iterator[claims.Check]:
    """Every claim: on ``block`` (theorem, subset, positions, dynamics) and on ``stack``."""
    seq = torch.cat([context, query[:, None]], dim=1)
    yield claims.theorem(block, context, query)
    yield claims.subset(block, context, query, part)
    yield claims.positions(block, seq, "token")
    yield claims.positions(block, seq, "query")
    prefixes = prefix_updates(block, context, query)
    yield claims.increments(block, context, query, updates=prefixes)
    yield claims.telescoping(block, context, query, updates=prefixes)
    yield claims.sgd(block, context, query, updates=prefixes)
    yield claims.stack(stack, seq)


def _inputs(d: int, dtype: torch.dtype, sizes: Sizes, seed: int):
    gen = torch.Generator().manual_seed(seed)
    context = torch.randn(sizes.batch, sizes.context, d, generator=gen, dtype=dtype)
    query = torch.randn(sizes.batch, d, generator=gen, dtype=dtype)
    return context, query, torch.rand(sizes.context, generator=gen) < 0.5


def _instance_checks(layer: str, composition: str, dtype: torch.dtype, sizes: Sizes,
                     seed: int) -> Iterator[claims.Check]:
    d, heads = _width(layer, sizes.d)
    block = build_block(layer, composition, d, heads=heads, seed=seed, dtype=dtype)
    stack = build_stack(layer, composition, d, sizes.depth, heads=heads, seed=seed, dtype=dtype)
    yield from _claims(block, stack, *_inputs(d, dtype, sizes, seed))


def _architecture_checks(name: str, dtype: torch.dtype, sizes: Sizes, seed: int) -> Iterator[claims.Check]:
    """The same claims on a tiny random configuration of a real architecture (its first block,
    and its whole stack of adapted ``transformers`` layers)."""
    info = get_architecture(name)
    stack = info.build(seed=seed, dtype=dtype)
    yield from _claims(stack.blocks[0], stack, *_inputs(info.width, dtype, sizes, seed))


def _row(dtype: str, layer: str, composition: str, check: claims.Check) -> Row:
    ratio = check.ratio.detach()
    i = int(ratio.argmax()) if ratio.numel() else 0
    pick = lambda t: float(t.detach().reshape(-1)[i]) if t.numel() else 0.0  # noqa: E731
    return Row(dtype, layer, composition, check.claim, pick(check.error), pick(check.tolerance),
               check.max_relative, check.worst_ratio, check.passed,
               {name: pick(t) for name, t in check.terms.items()})


def run_verify(layers: list[str], compositions: list[str], dtypes: list[str], sizes: Sizes,
               seed: int = 0, progress: bool = True, architectures: list[str] = ()) -> list[Row]:
    """Every claim on every (dtype, layer, composition), then on every real architecture
    (composition column ``transformers``); one :class:`Row` per claim."""
    jobs = [(dt, ly, c) for dt in dtypes for ly in layers for c in compositions]
    jobs += [(dt, a, ARCHITECTURE) for dt in dtypes for a in architectures]
    rows = []
    for i, (dt, ly, c) in enumerate(tqdm(jobs, desc="verify", disable=not progress, unit="block")):
        checks = (_architecture_checks(ly, DTYPES[dt], sizes, seed + i) if c == ARCHITECTURE
                  else _instance_checks(ly, c, DTYPES[dt], sizes, seed + i))
        for check in checks:
            rows.append(_row(dt, ly, c, check))
    return rows


def format_table(rows: list[Row], full: bool = False) -> str:
    """Summary per (dtype, claim), then failures (or every row with ``full``)."""
    lines = []
    header = f"{'dtype':8} {'layer':24} {'composition':12} {'claim':17} {'worst error':>11} {'tolerance':>10} {'rel. error':>10} {'err/tol':>8}  pass"
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
    return "\n".join(lines)


def _select(names: list[str], patterns: list[str] | None) -> list[str]:
    """``names`` matching any of the wildcard ``patterns`` (all of them without patterns)."""
    if not patterns:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads) if args.threads else None
    sizes = Sizes(args.d, args.context, args.batch, args.depth)
    compositions = _select(list_compositions() + [ARCHITECTURE], args.composition)
    layers = _select(list_layers(), args.layer) if len(compositions) > (ARCHITECTURE in compositions) else []
    archs = [] if args.no_architectures or ARCHITECTURE not in compositions else \
        _select(list_architectures(), args.layer)  # list_architectures() is empty without transformers
    if not layers and not archs:
        raise SystemExit(f"icl-verify: nothing matches --layer {args.layer} --composition {args.composition}; "
                         f"layers: {', '.join(list_layers())}; architectures: {', '.join(list_architectures())}; "
                         f"compositions: {', '.join(list_compositions() + [ARCHITECTURE])}")
    rows = run_verify(layers, [c for c in compositions if c != ARCHITECTURE], args.dtype or ["float64", "float32"],
                      sizes, seed=args.seed, progress=not args.no_progress, architectures=archs)
    print(format_table(rows, full=args.full))
    failed = sum(not r.passed for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    if args.json:
        payload = {"sizes": asdict(sizes), "seed": args.seed, "rows": [asdict(r) for r in rows]}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check every claim on every registered layer and composition",
                       description=__doc__)
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--d", type=int, default=8, help="model width (default 8)")
    p.add_argument("--context", type=int, default=6, help="context length n (default 6)")
    p.add_argument("--batch", type=int, default=2, help="prompts per instance (default 2)")
    p.add_argument("--depth", type=int, default=4, help="blocks per stack (default 4)")
    p.add_argument("--layer", action="append", metavar="PATTERN",
                   help="only layers (and real architectures) matching this wildcard (repeatable)")
    p.add_argument("--composition", action="append", metavar="PATTERN",
                   help="only compositions matching this wildcard (repeatable); 'transformers' "
                        "selects the real architectures")
    p.add_argument("--dtype", action="append", choices=list(DTYPES),
                   help="dtypes (repeatable; default float64 and float32)")
    p.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    p.add_argument("--full", action="store_true", help="print every row, not only failures")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-architectures", action="store_true",
                   help="skip the tiny real architectures (transformers adapters)")
    p.set_defaults(run=main)


