"""Hypothesis properties of icl_verify: one module per claim, each run over the whole registry."""
