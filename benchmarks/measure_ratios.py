"""The speed targets, measured in one run (``python -m benchmarks.measure_ratios``).

For a 4-block pre-LN stack (d=64) of each kind of ``common.STACKS`` (softmax attention, GRU,
Griffin's recurrent layer, gated DeltaNet, Mamba-2; ``--stacks`` picks some), at n=1024 context
tokens (a sequence of T=n+1 with the query):

- prefix dynamics of every block, fast, against one forward pass over the full sequence and
  against the generic method (one stack forward per prefix; estimated by timing the per-prefix
  work at ``SAMPLES`` evenly spaced prefix lengths and integrating over all ``n+1`` prefixes);
- all-position updates of every block at T=1024 against one forward pass, in time and in peak
  memory (the growth of the process's peak RSS over its resident size before the call, each
  measured in a fresh process after a warm-up call on 16 tokens).

Times are the minimum over ``REPEATS`` interleaved runs on ``THREADS`` thread(s).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from .common import STACKS, THREADS, make_stack, setup_torch, tokens

N = 1024
REPEATS = 7
SAMPLES = 9


def best(fns: dict, repeats: int = REPEATS) -> dict:
    """Minimum wall time of each callable, the callables interleaved round-robin."""
    out = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[k] = min(out[k], time.perf_counter() - t)
    return out


def generic_estimate(stack, context, query) -> tuple[float, float]:
    """Estimated time of the generic method at ``n`` (trapezoid over sampled prefix lengths of
    the per-prefix work: one stack forward and every block's decomposition at the query)."""
    n = context.shape[1]
    points = [round(k * n / (SAMPLES - 1)) for k in range(SAMPLES)]

    def one(i):
        xs = stack.block_inputs(torch.cat([context[:, :i], query[:, None]], dim=1))
        for block, x in zip(stack.blocks, xs):
            block.decompose(x)

    cost = [best({"p": lambda i=i: one(i)}, repeats=3)["p"] for i in points]
    step = n / (SAMPLES - 1)
    total = sum((a + b) / 2 * step for a, b in zip(cost, cost[1:])) + (cost[0] + cost[-1]) / 2
    return total, sum(cost)


def peak_growth(kind: str, what: str) -> float:
    """Peak-RSS growth (MiB) of one call in a fresh process."""
    code = f"""
import resource, torch
from benchmarks.common import make_stack, setup_torch, tokens
from icl_verify.updates import stack_updates
setup_torch()
stack, x = make_stack({kind!r}), tokens({N})
run = (lambda y: stack(y)) if {what!r} == "forward" else (lambda y: stack_updates(stack, y, every_position=True))
run(x[:, :16])  # warm-up on a short sequence: loads the code paths, not the memory
fn = lambda: run(x)
rss = int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
fn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    import argparse

    from icl_verify.prefix_cache import stack_prefix_updates
    from icl_verify.updates import stack_updates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", nargs="+", choices=list(STACKS), default=list(STACKS),
                        help="which stacks to measure (default: all)")
    args = parser.parse_args(argv)
    setup_torch()
    rows = {}
    for kind in args.stacks:
        stack = make_stack(kind)
        x = tokens(N + 1)
        context, query = x[:, :-1], x[:, -1]
        x_all = tokens(N)
        t = best({
            "forward": lambda: stack(x),
            "fast_prefix": lambda: stack_prefix_updates(stack, context, query),
            "forward_T": lambda: stack(x_all),
            "all_positions": lambda: stack_updates(stack, x_all, every_position=True),
        })
        generic, sampled = generic_estimate(stack, context, query)
        rows[kind] = dict(t, generic_estimate=generic, generic_sampled=sampled,
                          peak_forward_mib=peak_growth(kind, "forward"),
                          peak_all_positions_mib=peak_growth(kind, "all_positions"))
    print(json.dumps({"threads": THREADS, "n": N, "results": rows}, indent=1))
    print(f"\n| stack | forward T={N + 1} (ms) | fast prefix (ms) | fast/forward | generic est. (s) "
          f"| generic/fast | forward T={N} (ms) | all positions (ms) | all/forward | peak MiB fwd | "
          f"peak MiB all | mem ratio |")
    print("|---" * 12 + "|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['forward'] * 1e3:.1f} | {r['fast_prefix'] * 1e3:.1f} | "
              f"{r['fast_prefix'] / r['forward']:.2f} | {r['generic_estimate']:.1f} | "
              f"{r['generic_estimate'] / r['fast_prefix']:.0f} | {r['forward_T'] * 1e3:.1f} | "
              f"{r['all_positions'] * 1e3:.1f} | {r['all_positions'] / r['forward_T']:.2f} | "
              f"{r['peak_forward_mib']:.1f} | {r['peak_all_positions_mib']:.1f} | "
              f"{r['peak_all_positions_mib'] / r['peak_forward_mib']:.2f} |")


if __name__ == "__main__":
    main()
