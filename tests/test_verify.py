"""The ``icl-verify verify`` command, end to end on a small selection."""
import json

import pytest

from icl_verify.cli import main


def test_verify_selection_writes_json_and_passes(tmp_path, capsys):
    out = tmp_path / "rows.json"
    status = main(["verify", "--layer", "gru", "--composition", "pre_*", "--dtype", "float64",
                   "--no-progress", "--json", str(out)])
    assert status == 0
    rows = json.loads(out.read_text())["rows"]
    claims = {r["claim"] for r in rows}
    assert claims == {"theorem", "subset", "positions[token]", "positions[query]", "increments",
                      "telescoping", "sgd", "stack"}
    assert {r["composition"] for r in rows} == {"pre_ln", "pre_rms"}
    assert all(r["passed"] and r["ratio"] < 1 and r["relative_error"] < 1e-10 for r in rows)
    assert "16 passed, 0 failed" in capsys.readouterr().out


def test_verify_real_architecture():
    pytest.importorskip("transformers", reason="real architectures need pip install '.[models]'")
    assert main(["verify", "--layer", "gpt2", "--composition", "transformers", "--dtype", "float32",
                 "--no-progress"]) == 0


def test_verify_rejects_an_empty_selection(rejected):
    assert "matches no layer" in rejected(["verify", "--layer", "no_such_layer", "--no-progress"])


def test_verify_fails_on_a_wrong_update(monkeypatch, capsys):
    """With the rank-one change of W dropped (only the bypass shift left), the command must report
    failures and exit non-zero."""
    from icl_verify.updates import ImplicitUpdate

    monkeypatch.setattr(ImplicitUpdate, "dense",
                        lambda self: tuple(0 * u[..., :, None] * self.right[..., None, :] for u in self.left))
    assert main(["verify", "--layer", "gru", "--composition", "residual", "--dtype", "float64",
                 "--no-progress", "--no-architectures"]) == 1
    assert "NO" in capsys.readouterr().out
