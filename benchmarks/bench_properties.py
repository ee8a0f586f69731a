"""Throughput of the property suite's core check, and the identity's worst error (a ``track_``
benchmark, so it is charted across commits beside the timings)."""
import random

import torch

from icl_verify import claims
from icl_verify.blocks import build_block, list_compositions
from icl_verify.layers import get_layer, list_layers

from .common import fast_module, setup_torch


def draw_instance(rng: random.Random, dtype=torch.float64):
    """One random instance of the theorem: a block (layer, composition, width), a context of
    1..16 tokens and a query, all from ``rng``."""
    name = rng.choice(list_layers())
    info = get_layer(name)
    heads = rng.choice(info.heads)
    d = rng.choice([w for w in info.valid_dims(heads) if w <= 16] or info.valid_dims(heads))
    block = build_block(name, rng.choice(list_compositions()), d, heads=heads,
                        seed=rng.randrange(2**31), dtype=dtype)
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(2, rng.randint(2, 17), d, generator=g, dtype=torch.float64).to(dtype)
    return block, x[:, :-1], x[:, -1]


def identity_error(block, context, query) -> float:
    """The theorem's largest relative error ``||block(C, x) - block_{W+dW, s+ds}(x)|| /
    ||block(C, x)||`` over the batch (:func:`icl_verify.claims.theorem`)."""
    return claims.theorem(block, context, query).max_relative


class PropertyExamples:
    """Examples per second of the theorem's check = 1 / time_check_one_example."""

    rounds = 1
    repeat = (1, 5, 10.0)

    def setup(self):
        setup_torch()
        self.rng = random.Random(0)

    def time_check_one_example(self):
        error = identity_error(*draw_instance(self.rng))
        assert error < 1e-10, error


class IdentityError:
    """Worst relative error of the theorem's identity over 200 seeded instances (float64)."""

    def setup(self):
        setup_torch()

    def track_identity_worst_error(self):
        rng = random.Random(1)
        return max(identity_error(*draw_instance(rng)) for _ in range(200))

    track_identity_worst_error.unit = "relative error"


class FastError:
    """Worst relative difference of fast and generic prefix dynamics over every layer (float64)."""

    def setup(self):
        setup_torch()
        self.fast = fast_module()

    def track_fast_vs_generic_worst_error(self):
        from icl_verify.dynamics import prefix_updates

        worst = 0.0
        for name in list_layers():
            info = get_layer(name)
            heads = info.heads[-1]
            d = next(w for w in info.valid_dims(heads) if w >= 4)
            block = build_block(name, "pre_ln", d, heads=heads, seed=2)
            g = torch.Generator().manual_seed(3)
            x = torch.randn(1, 13, d, generator=g, dtype=torch.float64)
            a = self.fast.fast_prefix_updates(block, x[:, :-1], x[:, -1])
            b = prefix_updates(block, x[:, :-1], x[:, -1])
            worst = max(worst, float((a.left[0] - b.left[0]).abs().max() / b.left[0].abs().max()))
        return worst

    track_fast_vs_generic_worst_error.unit = "relative error"
