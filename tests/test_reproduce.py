"""Smoke runs of ``icl-verify reproduce`` (``--quick``) and the claims behind the figures."""
from __future__ import annotations

import json

import pytest
import torch

from icl_verify.cli import main
from icl_verify.experiments import (
    RegressionTask, TrainConfig, build_model, first_paper, implicit_predict, load_checkpoint,
    predict, save_checkpoint, second_paper, train,
)
from icl_verify.experiments.figures import finetune
from icl_verify.experiments.model import first_weights, forward_with_weights
from icl_verify.errors import ShapeError

EPS = torch.finfo(torch.float64).eps
FILES = {
    "fig1": ["fig1"],
    "fig2": ["fig2"],
    "fig3": ["fig3"],
    "positions": ["positions_identity", "positions_similarity", "positions_rank"],
    "blocks": ["blocks_similarity", "blocks_norm"]
    + [f"blocks_{v}_fig{k}" for v in ("preln", "noln") for k in (1, 2, 3)],
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    assert main(["reproduce", "all", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("figure", list(FILES))
def test_files_written(quick, figure):
    for name in FILES[figure]:
        for ext in ("png", "csv", "json"):
            path = quick / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
    assert figure in json.loads((quick / "summary.json").read_text())


def test_fig1_curves_agree_to_float_tolerance(quick):
    for name in ("fig1", "blocks_preln_fig1", "blocks_noln_fig1"):
        s = json.loads((quick / f"{name}.json").read_text())
        assert s["max_loss_gap"] <= 64 * EPS * max(1.0, max(s["final_icl_loss"])), name
        assert s["max_prediction_gap"] <= 1e-12, name


def test_fig2_increments_shrink_for_trained_model(quick):
    s = json.loads((quick / "fig2.json").read_text())
    assert s["slope_trained"][0] < -0.5
    assert s["last_increment_mean"][0] < s["first_increment_mean"][0]


def test_fig3_and_positions_numbers(quick):
    at = json.loads((quick / "fig3.json").read_text())["at_examples"]
    assert at["0"]["implicit_loss"] == pytest.approx(at["0"]["finetune_loss"])
    assert all(-1 <= v["cosine_mean"] <= 1 for v in at.values())
    ident = json.loads((quick / "positions_identity.json").read_text())
    for key, errs in ident.items():
        if key.startswith("identity"):
            assert max(errs.values()) < 1e-12, key
    rank = json.loads((quick / "positions_rank.json").read_text())
    # with the query as shared reference every update has the same right factor: rank one
    assert all(r == 1 for k, v in rank.items() if "reference query" in k for r in v)


def test_single_figure_reuses_checkpoint(quick, capsys):
    before = (quick / "checkpoints" / "paper1_seed0.pt").stat().st_mtime_ns
    assert main(["reproduce", "fig2", "--quick", "--out", str(quick), "--no-progress"]) == 0
    assert (quick / "checkpoints" / "paper1_seed0.pt").stat().st_mtime_ns == before
    assert "Fig 2: slope" in capsys.readouterr().out


def test_checkpoint_roundtrip(tmp_path):
    cfg, tc = second_paper(depth=2), TrainConfig(steps=2, batch=4, eval_every=1, val_prompts=4, n=5)
    model, hist = train(cfg, tc, progress=False)
    save_checkpoint(tmp_path, "m", model, cfg, tc, hist)
    again, cfg2, tc2, hist2 = load_checkpoint(tmp_path, "m")
    assert (cfg2, tc2, hist2) == (cfg, tc, hist)
    x = RegressionTask(2, 5).sample(3, torch.Generator().manual_seed(1)).tokens()
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_model_is_core_stack_and_identity_holds():
    task = RegressionTask(2, 7)
    p = task.sample(5, torch.Generator().manual_seed(0))
    for cfg in (first_paper(), second_paper(depth=3), second_paper(depth=2, layer_norm=False)):
        model = build_model(cfg)
        torch.testing.assert_close(implicit_predict(model, p.context, p.query),
                                   predict(model, p.tokens()), rtol=0, atol=1e-12)
    with pytest.raises(ShapeError):
        build_model(first_paper(heads=2))


def test_finetune_is_sgd_on_W():
    model = build_model(first_paper(hidden=8))
    p = RegressionTask(2, 3).sample(2, torch.Generator().manual_seed(0))
    preds, deltas = finetune(model, p, lr=0.1)
    assert preds.shape == (2, 4) and deltas[0].shape == (2, 4, 8, 3)
    # one manual step for prompt 0, example 0
    w = first_weights(model)[0].detach().clone().requires_grad_(True)
    q, y = p.example_queries()
    out = forward_with_weights(model, q[:1, :1], [w[None]])[0, -1, -1]
    ((out - y[0, 0]) ** 2).backward()
    torch.testing.assert_close(deltas[0][0, 1], -0.1 * w.grad)
