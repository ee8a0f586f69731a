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


def test_an_instance_outside_the_hypotheses_is_reported_not_checked(tmp_path, capsys):
    """float16, linear attention with ELU features, residual: the random depth-4 stack overflows
    float16 by its fourth block. The stack claim is reported as not checked, with the typed error's
    message and no numbers (no NaN in the table or the JSON); the other claims run and pass, and
    the command exits 0. Before, the error ended the whole run (exit 2, after every earlier job)."""
    out = tmp_path / "rows.json"
    status = main(["verify", "--layer", "linear_attention_elu", "--composition", "residual", "--dtype", "float16",
                   "--seed", "69", "--no-progress", "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0
    assert "7 passed, 0 failed, 1 not checked (outside the hypotheses)" in text
    assert "stack             NonFiniteError: target network input z holds NaN or inf" in text
    rows = {r["claim"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["stack"]["outside"].startswith("NonFiniteError") and rows["stack"]["ratio"] is None
    assert all(r["passed"] and not r["outside"] for c, r in rows.items() if c != "stack")
    assert "nan" not in text.split("Not checked")[0].lower()  # the table: numbers of checked rows only
