"""The error model's public names under their first module path; the model lives in
:mod:`icl_verify.error_model` (docs/error-model.md)."""
from .error_model import (EXACT_WIDTH, PROBES, RATIO_TERMS, TAIL, abs_matvec, accumulation_roundoff,  # noqa: F401
                          chain_bound, entry_norm, gamma, half_subnormal_spacing, identity_bound,
                          left_factor_scale, propagated_variance, rho, spectral_norm, sum_scale, underflow,
                          unit_roundoff, wide)
from .error_model.secant import VERTEX_BITS  # noqa: F401

rounding = chain_bound
"""``c(k, n)`` under its first name (:func:`~icl_verify.error_model.primitives.chain_bound`)."""
