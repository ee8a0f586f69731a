"""Witnesses of the error model's terms: for each term of :data:`icl_verify.error_model.catalog.TERMS`,
the corpus of :mod:`benchmarks.error_model_corpus` (without SmolLM2) run with that term dropped, and
every check that passes in the recorded corpus ``BASELINE`` (the full model) and fails without the
term, worst first.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.error_model_witnesses BASELINE [--terms NAME ...]

Prints, per term, the number of failing checks and the worst few (corpus key, claim, error/tolerance).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks import error_model_corpus as corpus
from icl_verify.error_model import catalog

SECTIONS = ("architectures", "layers", "properties")


def _worst(check: dict) -> float:
    """The worst error/tolerance of a recorded check (0 where outside the hypotheses)."""
    if "tolerance" not in check:
        return 0.0
    return max((float.fromhex(e) / float.fromhex(t) if float.fromhex(t) else float("inf")
                for e, t in zip(check["error"], check["tolerance"])), default=0.0)


WRONG_UPDATES = "test_wrong_update_fails"
"""Property tests whose ``identity`` checks are of wrong updates, not exact ones: never witnesses."""


def failures(rows: dict, baseline: dict) -> list[tuple[float, str, str]]:
    """``(ratio, key[index], claim)`` of every check of ``rows`` that fails (worst ratio above 1) and
    passes in ``baseline``, wrong updates left out."""
    out = []
    for section, cases in rows.items():
        for key, checks in cases.items():
            if WRONG_UPDATES in key:
                continue
            base = baseline.get(section, {}).get(key, [])
            for i, check in enumerate(checks):
                ratio = _worst(check)
                if ratio > 1 and i < len(base) and _worst(base[i]) <= 1:
                    out.append((ratio, f"{section}/{key}[{i}]", check["claim"]))
    return sorted(out, reverse=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="a corpus recorded with the full model")
    parser.add_argument("--terms", nargs="+", default=catalog.names(), choices=catalog.names())
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--show", type=int, default=5)
    args = parser.parse_args(argv)
    corpus.STRICT[0] = False
    torch.set_num_threads(1)
    baseline = json.loads(args.baseline.read_text())
    for name in args.terms:
        with catalog.dropped(name):
            found = failures(corpus.corpus(args.sections), baseline)
        print(f"{name}: {len(found)} failing checks")
        for ratio, key, claim in found[:args.show]:
            print(f"    {ratio:9.3g}  {key}  {claim}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
