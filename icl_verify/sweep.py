"""Every claim of docs/theory.md §2-§4 on seeded random instances of every registered layer in every
composition (and stacks), in float64 and float32 (and, on request, bfloat16 and float16): the
library behind ``icl-verify verify`` (:mod:`icl_verify.commands.verify` parses its arguments and
prints the table)."""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from . import claims
from .dynamics import prefix_updates
from .blocks import build_block, build_stack
from .adapters import get_architecture, list_architectures
from .errors import OUTSIDE_HYPOTHESES
from .layers import get_layer

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
    error: float | None  # None (and the next three) where not checked: see ``outside``
    tolerance: float | None
    relative_error: float | None
    ratio: float | None
    passed: bool
    terms: dict[str, float] = field(default_factory=dict)  # the tolerance's terms at that entry
    outside: str = ""  # why the instance is outside the claim's hypotheses (then not checked, no numbers)

    @property
    def failed(self) -> bool:
        """Checked and not passed."""
        return not self.passed and not self.outside


@dataclass(frozen=True)
class InstanceSizes:
    """Sizes of each random instance: width ``d`` (each layer takes its largest allowed width up
    to it), context length, prompts per instance and blocks per stack."""

    d: int = 8
    context: int = 6
    batch: int = 2
    depth: int = 4


def covering_architectures(names: list[str] | None = None) -> list[str]:
    """A small subset of the architectures ``names`` (default: every registered one) in which
    every tag of ``names`` occurs: greedy set cover, each step taking the architecture with the
    most tags not yet covered (ties: the first name). Every layout feature the adapters know (a
    norm placement, a network kind, a mixer, ...) is then checked at least once."""
    names = list_architectures() if names is None else names
    tags = {name: set(get_architecture(name).tags) for name in names}
    missing, chosen = set().union(*tags.values()) if tags else set(), []
    while missing:
        best = max(names, key=lambda n: len(tags[n] & missing))  # max keeps the first of equals
        chosen.append(best)
        missing -= tags[best]
    return sorted(chosen)


def _width(layer: str, want: int) -> tuple[int, int]:
    """The largest allowed width <= ``want`` (at least the smallest allowed), with its heads."""
    info = get_layer(layer)
    heads = max(h for h in info.heads if info.valid_dims(h))
    dims = info.valid_dims(heads)
    below = [d for d in dims if d <= want]
    return (below[-1] if below else dims[0]), heads


def _claims(block, stack, context: torch.Tensor, query: torch.Tensor,
            part: torch.Tensor) -> Iterator[tuple[str, Callable[[], claims.Check]]]:
    """Every claim as ``(name, run)``: on ``block`` (theorem, subset, positions, dynamics) and on ``stack``."""
    seq = torch.cat([context, query[:, None]], dim=1)
    prefixes = functools.cache(lambda: prefix_updates(block, context, query))
    yield "theorem", lambda: claims.theorem(block, context, query)
    yield "subset", lambda: claims.subset(block, context, query, part)
    yield "positions[token]", lambda: claims.positions(block, seq, "token")
    yield "positions[query]", lambda: claims.positions(block, seq, "query")
    yield "increments", lambda: claims.increments(block, context, query, updates=prefixes())
    yield "telescoping", lambda: claims.telescoping(block, context, query, updates=prefixes())
    yield "sgd", lambda: claims.sgd(block, context, query, updates=prefixes())
    yield "stack", lambda: claims.stack(stack, seq)


def _inputs(d: int, dtype: torch.dtype, sizes: InstanceSizes, seed: int):
    gen = torch.Generator().manual_seed(seed)
    context = torch.randn(sizes.batch, sizes.context, d, generator=gen, dtype=dtype)
    query = torch.randn(sizes.batch, d, generator=gen, dtype=dtype)
    return context, query, torch.rand(sizes.context, generator=gen) < 0.5


def _instance_checks(layer: str, composition: str, dtype: torch.dtype, sizes: InstanceSizes,
                     seed: int) -> Iterator[claims.Check]:
    d, heads = _width(layer, sizes.d)
    block = build_block(layer, composition, d, heads=heads, seed=seed, dtype=dtype)
    stack = build_stack(layer, composition, d, sizes.depth, heads=heads, seed=seed, dtype=dtype)
    yield from _claims(block, stack, *_inputs(d, dtype, sizes, seed))


def _architecture_checks(name: str, dtype: torch.dtype, sizes: InstanceSizes,
                         seed: int) -> Iterator[claims.Check]:
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


@dataclass(frozen=True)
class Job:
    """One (dtype, layer or architecture, composition) instance with its seed."""

    dtype: str
    layer: str
    composition: str
    seed: int
    sizes: InstanceSizes


def job_rows(job: Job) -> list[Row]:
    """Every claim on one instance, a :class:`Row` each (``outside`` set where the instance is
    outside a claim's hypotheses)."""
    dt, ly, c = job.dtype, job.layer, job.composition
    checks = (_architecture_checks(ly, DTYPES[dt], job.sizes, job.seed) if c == ARCHITECTURE
              else _instance_checks(ly, c, DTYPES[dt], job.sizes, job.seed))
    rows = []
    for name, run in checks:
        try:
            rows.append(_row(dt, ly, c, run()))
        except OUTSIDE_HYPOTHESES as err:
            rows.append(Row(dt, ly, c, name, None, None, None, None, False, outside=f"{type(err).__name__}: {err}"))
    return rows


@contextlib.contextmanager
def _mapper(processes: int) -> Iterator[Callable]:
    """``map`` over ``processes`` forked worker processes (one torch thread each), in order; the
    built-in ``map`` for one process or where processes cannot be forked. Forked workers inherit
    every registration of the parent, plugins and in-process ones alike."""
    if processes <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    with multiprocessing.get_context("fork").Pool(processes, initializer=torch.set_num_threads,
                                                  initargs=(1,)) as pool:
        yield functools.partial(pool.imap, chunksize=1)


def run_verify(layers: list[str], compositions: list[str], dtypes: list[str], sizes: InstanceSizes,
               seed: int = 0, progress: bool = True, architectures: list[str] = (),
               processes: int = 1) -> list[Row]:
    """Every claim on every (dtype, layer, composition), then on every real architecture
    (composition column ``transformers``), over ``processes`` worker processes; one :class:`Row`
    per claim, in that order whatever the number of processes, with ``outside`` set (and no
    numbers) where the instance is outside the claim's hypotheses
    (:data:`~icl_verify.errors.OUTSIDE_HYPOTHESES`)."""
    keys = [(dt, ly, c) for dt in dtypes for ly in layers for c in compositions]
    keys += [(dt, a, ARCHITECTURE) for dt in dtypes for a in architectures]
    jobs = [Job(dt, ly, c, seed + i, sizes) for i, (dt, ly, c) in enumerate(keys)]
    with _mapper(min(processes, len(jobs))) as mapped:
        done = tqdm(mapped(job_rows, jobs), total=len(jobs), desc="verify", disable=not progress, unit="block")
        return [row for rows in done for row in rows]
