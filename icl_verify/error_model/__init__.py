"""The error model: how far apart the two sides of each claim may be in floating point
(docs/error-model.md has the derivation, term by term in the order of the code).

Modules, bottom up (each imports only those above it in this list):

- :mod:`.primitives`: ``u``, ``u_acc``, ``gamma``, ``c(k, n)``, ``rho``, ``eta``, norms;
- :mod:`.scales`: the partial-sum scale ``q`` and the left factor's ``c_left``;
- :mod:`.taps`, :mod:`.monte_carlo`: roundings inside a map, and Monte Carlo arithmetic;
- :mod:`.jacobian`: ``||J diag(r)||_F^2`` and spectral norms;
- :mod:`.terms`: the named terms of an identity's tolerance;
- :mod:`.refinements`, :mod:`.secant`: the refinement steps;
- :mod:`.identity`: :func:`identity_bound`;
- :mod:`.matrix`: the matrix claims' bounds.
"""
from .identity import RATIO_TERMS, identity_bound
from .jacobian import EXACT_WIDTH, PROBES, propagated_variance, spectral_norm
from .primitives import (TAIL, abs_matvec, accumulation_roundoff, chain_bound, entry_norm, gamma,
                         half_subnormal_spacing, rho, underflow, unit_roundoff, wide)
from .scales import left_factor_scale, sum_scale
from .terms import PRE_ACTIVATION_TERMS

__all__ = [
    "EXACT_WIDTH", "PRE_ACTIVATION_TERMS", "PROBES", "RATIO_TERMS", "TAIL", "abs_matvec", "accumulation_roundoff",
    "chain_bound", "entry_norm", "gamma", "half_subnormal_spacing", "identity_bound", "left_factor_scale",
    "propagated_variance", "rho", "spectral_norm", "sum_scale", "underflow", "unit_roundoff", "wide",
]
