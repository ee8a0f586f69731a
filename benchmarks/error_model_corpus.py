"""The error model's verdict corpus: the tolerance and the error of every entry of every check on a
fixed set of instances, as exact float hex, so that a change to the error model's code can be shown
to leave every tolerance bit for bit the same (or each difference listed).

The corpus:

- ``architectures``: every claim of ``icl-verify verify`` on every tiny real architecture
  (:func:`icl_verify.adapters.list_architectures`) in float64, float32, bfloat16 and float16;
- ``layers``: every claim on every registered layer and composition in float64 and float32 (the
  instances of ``icl-verify verify``, seed per job as there);
- ``properties``: every explicit ``@example`` of the property suite (Hypothesis's explicit phase
  only), by test id;
- ``smollm2``: the identity at every layer and position of SmolLM2-135M on the 8-shot capitals
  prompt, in float32, float64 and bfloat16 (``--no-llm`` skips it).

Usage (from the repository root, one thread so that kernels sum in one fixed order)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.error_model_corpus record corpus.json
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.error_model_corpus compare corpus.json

``compare`` recomputes the corpus and lists every check whose tolerance or error differs;
``summary`` prints the worst error/tolerance of a recorded corpus per section, dtype and claim.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

from icl_verify import claims
from icl_verify.errors import OUTSIDE_HYPOTHESES

DTYPES = ("float64", "float32", "bfloat16", "float16")
LAYER_DTYPES = ("float64", "float32")
LLM_DTYPES = ("float32", "float64", "bfloat16")
STRICT = [True]
"""Whether a failing property example stops the corpus (False: record it and go on)."""


def _hex(t: torch.Tensor) -> list[str]:
    return [float(v).hex() for v in t.detach().double().reshape(-1).tolist()]


@contextlib.contextmanager
def recording(into: list):
    """Within this context every :class:`~icl_verify.claims.Check` built by a claim is appended to
    ``into`` as ``{"claim", "tolerance", "error"}`` (hex strings per entry)."""
    original = claims.Check

    class RecordedCheck(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            into.append({"claim": self.claim, "tolerance": _hex(self.tolerance), "error": _hex(self.error)})

    claims.Check = RecordedCheck
    try:
        yield
    finally:
        claims.Check = original


def _run_claims(jobs) -> dict:
    """``{key: [check records]}`` for ``jobs``: ``(key, iterator of (name, run))``."""
    out = {}
    for key, checks in jobs:
        rows: list = []
        with recording(rows):
            for name, run in checks:
                try:
                    run()
                except OUTSIDE_HYPOTHESES as err:
                    rows.append({"claim": name, "outside": type(err).__name__})
        out[key] = rows
    return out


def architectures() -> dict:
    from icl_verify import sweep
    from icl_verify.adapters import get_architecture, list_architectures

    sizes = sweep.InstanceSizes()

    def jobs():
        for i, (dt, name) in enumerate((dt, a) for dt in DTYPES for a in list_architectures()):
            info = get_architecture(name)
            stack = info.build(seed=i, dtype=sweep.DTYPES[dt])
            inputs = sweep._inputs(info.width, sweep.DTYPES[dt], sizes, i)
            yield f"{dt}/{name}", sweep._claims(stack.blocks[0], stack, *inputs)
    return _run_claims(jobs())


def layers() -> dict:
    from icl_verify import sweep
    from icl_verify.blocks import list_compositions
    from icl_verify.layers import list_layers

    sizes = sweep.InstanceSizes()
    todo = [(dt, ly, c) for dt in LAYER_DTYPES for ly in list_layers() for c in list_compositions()]
    return _run_claims((f"{dt}/{ly}/{c}", sweep._instance_checks(ly, c, sweep.DTYPES[dt], sizes, i))
                       for i, (dt, ly, c) in enumerate(todo))


def properties() -> dict:
    """Every explicit example of the property suite, under Hypothesis's explicit phase only."""
    import pytest
    from hypothesis import HealthCheck, Phase, settings

    settings.register_profile("corpus", deadline=None, phases=(Phase.explicit,), database=None,
                              suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))
    os.environ["HYPOTHESIS_PROFILE"] = "corpus"
    out: dict = {}

    class Plugin:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_call(self, item):
            rows: list = []
            with recording(rows):
                yield
            if rows:
                out[item.nodeid] = rows

    code = pytest.main(["properties", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--no-header",
                        "-o", "addopts=-p no:benchmark"] + (["-x"] if STRICT[0] else []), plugins=[Plugin()])
    if code not in (0, 5) and STRICT[0]:
        raise SystemExit(f"the property suite's explicit examples failed (pytest exit code {code})")
    return out


def smollm2() -> dict:
    from icl_verify.adapters import adapt_causal_lm
    from icl_verify.causal_lm.casting import exact_casts
    from icl_verify.causal_lm.identity import identity_errors
    from icl_verify.causal_lm.loading import load_model
    from icl_verify.causal_lm.prompts import TASKS, task_prompt

    model, tokenizer = load_model()
    ids = task_prompt(tokenizer, TASKS.get("capitals"), 8).ids()
    out = {}
    with exact_casts(model) as cast, torch.no_grad():
        for name in LLM_DTYPES:
            cast(getattr(torch, name))
            rows: list = []
            with recording(rows):
                identity_errors(adapt_causal_lm(model), ids)
            out[f"{name}/capitals-8"] = rows
    return out


SECTIONS = {"architectures": architectures, "layers": layers, "properties": properties, "smollm2": smollm2}


def corpus(sections) -> dict:
    torch.set_num_threads(1)
    return {name: SECTIONS[name]() for name in sections}


def compare(old: dict, new: dict) -> list[str]:
    """One line per check (or entry count) that differs between two corpora."""
    lines = []
    for section, cases in old.items():
        for key, rows in cases.items():
            got = new.get(section, {}).get(key)
            if got is None:
                lines.append(f"{section}/{key}: missing")
                continue
            for i, (a, b) in enumerate(zip(rows, got)):
                for field in ("outside", "tolerance", "error"):
                    if a.get(field) != b.get(field):
                        lines.append(f"{section}/{key}[{i}] {a['claim']}: {field} "
                                     f"{_first_difference(a.get(field), b.get(field))}")
            if len(rows) != len(got):
                lines.append(f"{section}/{key}: {len(rows)} checks, now {len(got)}")
    return lines


def _first_difference(a, b) -> str:
    if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
        return f"{a!r:.60} -> {b!r:.60}"
    diff = [(float.fromhex(x), float.fromhex(y)) for x, y in zip(a, b) if x != y]
    worst = max(diff, key=lambda p: abs(p[1] / p[0] - 1) if p[0] else float("inf"))
    return f"{len(diff)} of {len(a)} entries, e.g. {worst[0]!r} -> {worst[1]!r}"


def summary(data: dict) -> list[str]:
    """The worst error/tolerance and the number of checks per section, dtype and claim."""
    worst: dict = {}
    for section, cases in data.items():
        for key, rows in cases.items():
            dtype = key.split("/")[0] if section != "properties" else "-"
            for row in rows:
                if "tolerance" not in row:
                    continue
                ratio = max((float.fromhex(e) / float.fromhex(t) if float.fromhex(t) else 0.0
                             for e, t in zip(row["error"], row["tolerance"])), default=0.0)
                k = (section, dtype, row["claim"])
                n, w = worst.get(k, (0, 0.0))
                worst[k] = (n + 1, max(w, ratio))
    return [f"{s:<14}{d:<10}{c:<18}{n:>6} checks  worst {w:.3g}" for (s, d, c), (n, w) in sorted(worst.items())]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("record", "compare", "summary"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--no-llm", action="store_true", help="skip SmolLM2")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections if not (args.no_llm and s == "smollm2")]
    if args.mode == "record":
        args.path.write_text(json.dumps(corpus(sections), indent=0, sort_keys=True))
        return 0
    old = json.loads(args.path.read_text())
    old = {s: old[s] for s in sections if s in old}
    if args.mode == "summary":
        print("\n".join(summary(old)))
        return 0
    lines = compare(old, corpus(list(old)))
    print("\n".join(lines) if lines else "every tolerance and error bit for bit the same")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
