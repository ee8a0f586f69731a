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


def test_the_default_architectures_cover_every_tag():
    """Without ``--layer``, ``verify`` checks a subset of the architectures in which every tag of
    every registered architecture occurs; a cover that dropped one architecture would lose a tag."""
    pytest.importorskip("transformers", reason="real architectures need pip install '.[models]'")
    from icl_verify.adapters import get_architecture, list_architectures
    from icl_verify.sweep import covering_architectures

    tags = lambda names: set().union(*(get_architecture(n).tags for n in names))  # noqa: E731
    chosen = covering_architectures()
    assert tags(chosen) == tags(list_architectures())
    assert len(chosen) < len(list_architectures()) / 3
    assert covering_architectures([]) == []


@pytest.mark.parametrize("flags, expected", [((), "cover"), (("--all-architectures",), "all"),
                                             (("--layer", "gpt2"), ["gpt2"]), (("--no-architectures",), [])])
def test_verify_architecture_selection(monkeypatch, flags, expected):
    """``--all-architectures`` checks every architecture, the default the tag cover, ``--layer``
    exactly its matches; the selection is what ``run_verify`` receives."""
    pytest.importorskip("transformers", reason="real architectures need pip install '.[models]'")
    from icl_verify.adapters import list_architectures
    from icl_verify.commands import verify as command
    from icl_verify.sweep import covering_architectures

    seen = []

    def run_verify(*args, architectures=(), **kwargs):
        seen.extend(architectures)
        return []

    monkeypatch.setattr(command, "run_verify", run_verify)
    main(["verify", "--no-progress", *flags])
    want = {"cover": covering_architectures(), "all": list_architectures()}[expected] if isinstance(expected, str) \
        else expected
    assert seen == want


def test_no_and_all_architectures_exclude_each_other(rejected):
    assert "exclude each other" in rejected(["verify", "--no-architectures", "--all-architectures"])


def test_worker_processes_give_the_same_rows_in_the_same_order(tmp_path):
    """``--jobs 2`` forks two workers; every row, its numbers and its place are those of the run
    in one process (each instance's seed is fixed by its place in the job list, not by the worker)."""
    runs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"rows{jobs}.json"
        assert main(["verify", "--layer", "gru", "--layer", "mingru", "--composition", "pre_*", "--no-progress",
                     "--no-architectures", "--jobs", jobs, "--json", str(out)]) == 0
        runs.append(json.loads(out.read_text())["rows"])
    assert len(runs[0]) == 64 and runs[0] == runs[1]
