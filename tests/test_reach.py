"""``benchmarks.reach`` classifies a model type without a traceback: OK (adapted, gated, identity
within tolerance), unfit with its reason, unsupported with the part or the step."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers", reason="the adapters need the optional extra: pip install '.[models]'")

from benchmarks.reach import _draw_zero_biases, classify, overrides, table  # noqa: E402
from icl_verify.adapters import LayerRecord, adapt_causal_lm, register_record, tiny_causal_lm  # noqa: E402
from icl_verify.adapters.ffn import Gated  # noqa: E402
from icl_verify.adapters.gate import check_reconstruction, reconstruction  # noqa: E402
from icl_verify.adapters.moe import SigmoidMoE  # noqa: E402
from icl_verify.adapters.recognise import ByLayer  # noqa: E402
from icl_verify.causal_lm import identity_errors  # noqa: E402

FLOAT32_ROUTERS = ["deepseek_v2", "deepseek_v3", "glm4_moe", "dots1", "exaone_moe", "kimi_linear", "lara_mini",
                   "mimo_v2_flash", "minicpm5_moe", "solar_open"]
"""One type per family whose router computes its logits in float32 whatever the model's dtype."""


@pytest.mark.parametrize("model_type, status, detail", [
    ("llama", "OK", "worst error/tolerance"),
    ("opt", "OK", "worst error/tolerance"),              # no record: recognised
    ("rwkv", "unfit", "token shift"),
    ("bloom", "unsupported", "is not recognised: the decoder layer's output is none of"),
    ("deepseek_v3", "OK", "worst error/tolerance"),        # its router computes in float32
    ("ernie4_5_moe", "unsupported", "gate:"),                  # its correction bias, drawn, is not read
])
def test_classify(model_type, status, detail):
    got_status, got_detail = classify(model_type)
    assert got_status == status and detail in got_detail


def test_table_counts_and_rows():
    text, counts = table(["llama", "rwkv"])
    assert counts == {"OK": 1, "unfit": 1}
    assert "| llama | OK |" in text and "| rwkv | unfit |" in text and "transformers 5." in text


def _reach_model(model_type: str):
    """The reach's tiny float64 model of ``model_type`` (zero biases drawn) and its probe ``(1, 9)``;
    skipped where the installed ``transformers`` has no such type (it came in a later release)."""
    import transformers

    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no model type {model_type!r}")
    model = tiny_causal_lm(model_type, **overrides(model_type))
    model.set_experts_implementation("eager")
    _draw_zero_biases(model)
    return model, torch.randint(1, model.get_input_embeddings().weight.shape[0], (1, 9),
                                generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("model_type", FLOAT32_ROUTERS)
def test_float32_router_is_read_in_float32_and_passes_in_float64(model_type):
    """The reach's tiny model in float64: the recognised reader computes the router's logits in
    float32 as the model does, the gate passes with gap/tolerance at most 0.1 (measured: at most
    0.02), and the identity holds at every layer and position."""
    model, ids = _reach_model(model_type)
    lm = adapt_causal_lm(model, ids)
    readers = [getattr(b.record.ffn, "moe", b.record.ffn) for b in lm.stack.blocks]
    assert any(getattr(r, "router_float32", False) for r in readers)
    assert check_reconstruction(lm, ids).ratio <= 0.1
    with torch.no_grad():
        _, ratios, _ = identity_errors(lm, ids)
    assert float(ratios.max()) <= 1


@dataclasses.dataclass(frozen=True)
class _NoCorrectionBias(SigmoidMoE):
    """A sigmoid reader that chooses the experts by ``p`` alone, ignoring the correction bias."""

    def _router_setting(self, layer, name, default):
        return default if name == "e_score_correction_bias" else super()._router_setting(layer, name, default)


@pytest.mark.parametrize("model_type", ["deepseek_v3", "dots1", "exaone_moe", "sarvam_moe"])
def test_drawn_correction_bias_is_seen_by_the_gate(model_type):
    """With the reach's drawn score-correction biases, the recognised reader with the bias left
    out chooses other experts: the gate's gap is above its tolerance."""
    model, ids = _reach_model(model_type)
    lm = adapt_causal_lm(model, ids)
    for block in lm.stack.blocks:
        ffn = block.record.ffn
        moe = getattr(ffn, "moe", ffn)
        if isinstance(moe, SigmoidMoE):
            wrong = _NoCorrectionBias(**{f.name: getattr(moe, f.name) for f in dataclasses.fields(moe)})
            ffn = dataclasses.replace(ffn, moe=wrong) if ffn is not moe else wrong
            block.record = dataclasses.replace(block.record, ffn=ffn)
    with torch.no_grad():
        assert reconstruction(lm, ids).ratio > 1


def test_router_read_in_float64_is_ok_in_float32_only(monkeypatch):
    """A registered DeepSeek-V3 record whose router computes its logits in the model's dtype: in
    float64 the gate refuses it within float32 rounding, in float32 it is the model's computation."""
    from icl_verify.adapters import _registry, records

    for registry in (records.RECORDS, _registry.MODEL_ADAPTERS, _registry.ARCHITECTURES):
        monkeypatch.setattr(registry, "_records", dict(registry._records))
    monkeypatch.setattr(records, "TINY", dict(records.TINY))
    register_record(LayerRecord("deepseek_v3", ByLayer(Gated(), SigmoidMoE(shared="shared_experts"))),
                    replace=True, architecture=False)
    status, detail = classify("deepseek_v3")
    assert status == "OK in float32" and "within float32 rounding" in detail
