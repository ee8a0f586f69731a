"""``benchmarks.reach`` classifies a model type without a traceback: OK (adapted, gated, identity
within tolerance), unfit with its reason, unsupported with the part or the step."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the adapters need the optional extra: pip install '.[models]'")

from benchmarks.reach import classify, table  # noqa: E402


@pytest.mark.parametrize("model_type, status, detail", [
    ("llama", "OK", "worst error/tolerance"),
    ("opt", "OK", "worst error/tolerance"),              # no record: recognised
    ("rwkv", "unfit", "token shift"),
    ("bloom", "unsupported", "is not recognised: the decoder layer's output is none of"),
    ("deepseek_v3", "OK in float32", "within float32 rounding"),
    ("ernie4_5_moe", "unsupported", "gate:"),                  # its correction bias, drawn, is not read
])
def test_classify(model_type, status, detail):
    got_status, got_detail = classify(model_type)
    assert got_status == status and detail in got_detail


def test_table_counts_and_rows():
    text, counts = table(["llama", "rwkv"])
    assert counts == {"OK": 1, "unfit": 1}
    assert "| llama | OK |" in text and "| rwkv | unfit |" in text and "transformers 5." in text
