"""The stack claim's term past the identity's (docs/error-model.md, "decomposition"): the fresh
rounding of a lone token's decomposition at the propagated point, by Monte Carlo arithmetic."""
from __future__ import annotations

import torch

from ..blocks import ContextualBlock, Decomposition
from ..errors import NonFiniteError
from ..updates import ImplicitUpdate, apply_update, single_token
from .monte_carlo import monte_carlo_samples
from .primitives import wide

DECOMPOSITION_SAMPLES = 8
"""Monte Carlo arithmetic draws of a lone token's decomposition rounding in the stack claim (:func:`icl_verify.claims.stack`)."""


def decomposition_variance(block: ContextualBlock, upd: ImplicitUpdate, h: torch.Tensor) -> torch.Tensor:
    """``D = 2 E ||J e||^2`` per entry ``(B,)``: ``e`` the rounding of the lone token's
    decomposition ``(z, s)`` at ``h`` ``(B, d)``, estimated by :data:`DECOMPOSITION_SAMPLES` draws
    of Monte Carlo arithmetic (:mod:`icl_verify.error_model.monte_carlo`; the layer can be any module),
    ``J`` the Jacobian of the updated block's map ``(z, s) -> output((W + dW) z + b, s + ds)``;
    twice: the rounding at ``h`` and the one at the reference token, independent once the two
    points differ."""
    parts = lambda d: (d.z,) if d.s is None else (d.z, d.s)  # noqa: E731
    with torch.no_grad():
        inputs = parts(single_token(block, h))
    draws = monte_carlo_samples(lambda q: parts(single_token(block, q)), h, DECOMPOSITION_SAMPLES)
    fn = lambda z, s=None: apply_update(block, upd, Decomposition(z, s), dense=False)  # noqa: E731
    jv = torch.func.vmap(lambda *e: torch.func.jvp(fn, inputs, e)[1])(*draws)  # (K, B, d)
    var = 2 * wide(jv).square().sum(-1).mean(0)
    if not torch.isfinite(var).all():
        raise NonFiniteError("the rounding of a lone token's decomposition is not finite here")
    return var
