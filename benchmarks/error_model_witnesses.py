"""Witnesses of the error model's terms: for each term of :data:`icl_verify.error_model.catalog.TERMS`,
the corpus of :mod:`benchmarks.error_model_corpus` (without SmolLM2) run with that term dropped, and
every check whose exact update then fails (error above tolerance), worst first.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.error_model_witnesses [--terms NAME ...]

Prints, per term, the number of failing checks and the worst few (corpus key, claim, error/tolerance).
"""
from __future__ import annotations

import argparse
import sys

import torch

from benchmarks import error_model_corpus as corpus
from icl_verify.error_model import catalog

SECTIONS = ("architectures", "layers", "properties")


def failures(rows: dict) -> list[tuple[float, str, str]]:
    """``(ratio, key, claim)`` of every recorded check with an entry whose error exceeds its tolerance."""
    out = []
    for section, cases in rows.items():
        for key, checks in cases.items():
            for check in checks:
                if "tolerance" not in check:
                    continue
                ratios = [float.fromhex(e) / float.fromhex(t) if float.fromhex(t) else float("inf")
                          for e, t in zip(check["error"], check["tolerance"]) if float.fromhex(e) > float.fromhex(t)]
                if ratios:
                    out.append((max(ratios), f"{section}/{key}", check["claim"]))
    return sorted(out, reverse=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terms", nargs="+", default=catalog.names(), choices=catalog.names())
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--show", type=int, default=5)
    args = parser.parse_args(argv)
    corpus.STRICT[0] = False
    torch.set_num_threads(1)
    for name in args.terms:
        with catalog.dropped(name):
            found = failures(corpus.corpus(args.sections))
        print(f"{name}: {len(found)} failing checks")
        for ratio, key, claim in found[:args.show]:
            print(f"    {ratio:9.3g}  {key}  {claim}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
