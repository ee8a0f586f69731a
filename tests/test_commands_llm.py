"""``icl-verify llm`` rejects bad arguments up front (one line, exit status 2, before the model is
loaded), says where its files go, and writes them there."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from icl_verify.cli import build_parser, main


@pytest.mark.parametrize("argv, message", [
    (["--prompt", ""], "--prompt: the prompt is empty"),
    (["--prompt", "   "], "--prompt: the prompt is empty"),
    (["--prompt", "a -> b\\n"], "--prompt: the query (last line) is empty"),
    (["--prompt", "a -> b\n\nc ->"], "--prompt: line 2 is empty"),
    (["--prompt", "a -> b\nc ->", "--shots", "1"], "--shots chooses shots of a --task"),
    (["--shots", "0"], "argument --shots: must be at least 1, got 0"),
    (["--shots", "-2"], "argument --shots: must be at least 1, got -2"),
    (["--shots", "9"], "--shots 9: task 'capitals' has 8 shots"),
    (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
    (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (["--model", "MISSING"], "no such model folder"),
    (["--model", "MISSING.gguf"], "no such .gguf file"),
    (["--out", "FILE"], "exists and is not a folder"),
    (["--device", "warp-drive"], "--device 'warp-drive'"),
])
def test_bad_arguments(rejected, tmp_path, monkeypatch, argv, message):
    import icl_verify.causal_lm

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded for bad arguments")

    monkeypatch.setattr(icl_verify.causal_lm, "load_model", no_loading)
    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / a) if a in ("MISSING", "MISSING.gguf", "FILE") else a for a in argv]
    assert message in rejected(["llm", *argv, "--no-progress"])


def test_help_says_where_files_go():
    sub = build_parser()._subparsers._group_actions[0].choices["llm"]
    assert "./icl-verify-llm/" in " ".join(sub.format_help().split())


class CharTokenizer:
    """One token per character (ids modulo the tiny vocabulary of 64)."""

    def __call__(self, text, add_special_tokens=False):
        return SimpleNamespace(input_ids=[ord(c) % 64 for c in text])

    def decode(self, ids):
        return "".join(chr(48 + i) for i in ids)


def test_default_out_is_a_named_folder(tmp_path, monkeypatch, capsys):
    """Without ``--out`` the files go to ``./icl-verify-llm/``, named on the first line."""
    pytest.importorskip("transformers", reason="the LLM analysis needs pip install '.[models]'")
    import torch

    import icl_verify.causal_lm
    from icl_verify.adapters.llama import tiny_lm

    model = tiny_lm("llama").to(torch.float32).requires_grad_(False)
    monkeypatch.setattr(icl_verify.causal_lm, "load_model", lambda *a, **k: (model, CharTokenizer()))
    monkeypatch.chdir(tmp_path)
    main(["llm", "--task", "antonyms", "--shots", "1", "--dtype", "float64", "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    folder = tmp_path / "icl-verify-llm"
    assert out[0] == f"icl-verify llm: writing the CSV, JSON and PNG files to {folder.resolve()}/"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icl-verify-llm"]
    assert (folder / "summary.json").is_file() and (folder / "llm_analysis.png").is_file()


def _run_on(model, tmp_path, monkeypatch, capsys, analyse=None) -> tuple[int, str, str]:
    """``icl-verify llm`` on ``model`` (float64, one shot) with a character tokenizer, and
    ``analyse`` in place of the analysis if given: ``(exit status, stdout, stderr)``."""
    import icl_verify.causal_lm

    monkeypatch.setattr(icl_verify.causal_lm, "load_model", lambda *a, **k: (model, CharTokenizer()))
    if analyse is not None:
        monkeypatch.setattr(icl_verify.causal_lm, "analyse", analyse)
    code = main(["llm", "--task", "antonyms", "--shots", "1", "--dtype", "float64", "--no-progress",
                 "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    return code, out, err


def _failing(claim: str):
    """The real analysis with one claim made to fail."""
    import icl_verify.causal_lm

    real = icl_verify.causal_lm.analyse

    def analyse(*args, **kwargs):
        a = real(*args, **kwargs)
        if claim == "identity":
            a.ratios["float64"][-1, -1] = 2.0
        else:
            a.query_check["float64"]["same_prediction"] = False
        return a
    return analyse


@pytest.mark.parametrize("claim", ["identity", "query_alone"])
def test_exit_status_is_nonzero_when_a_claim_fails(claim, tmp_path, monkeypatch, capsys):
    """The next token is the same; the status still says that a claim failed, and which."""
    pytest.importorskip("transformers", reason="the LLM analysis needs pip install '.[models]'")
    from icl_verify.adapters.llama import tiny_lm

    model = tiny_lm("llama").requires_grad_(False)
    code, out, _ = _run_on(model, tmp_path, monkeypatch, capsys)
    assert code == 0 and "verdict: every claim holds" in out
    code, out, _ = _run_on(model, tmp_path, monkeypatch, capsys, _failing(claim))
    assert code == 1
    assert ("identity error over tolerance 2" if claim == "identity" else "predicts another next token") in out


def test_gate_refusal_is_one_line_and_no_verdict(tmp_path, monkeypatch, capsys):
    """A model whose record describes another network (Olmo 2 read without its post-norms): one
    line on stderr naming the layer, exit status 1, no table and no verdict."""
    pytest.importorskip("transformers", reason="the LLM analysis needs pip install '.[models]'")
    from icl_verify.adapters import LayerRecord, _registry, records, tiny_causal_lm
    from icl_verify.adapters.ffn import Gated

    for registry in (records.RECORDS, _registry.MODEL_ADAPTERS):
        monkeypatch.setattr(registry, "_records", dict(registry._records))
    records.register_record(LayerRecord("olmo2", Gated()), architecture=False, replace=True)
    code, out, err = _run_on(tiny_causal_lm("olmo2").requires_grad_(False), tmp_path, monkeypatch, capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "the output of layer 0 differs" in err
    assert "implicit updates per layer" not in out and "verdict" not in out


@pytest.mark.parametrize("model_type, config, reason", [
    ("rwkv", dict(vocab_size=64, hidden_size=16, num_hidden_layers=2), "token shift"),
    ("t5", dict(vocab_size=64, d_model=16, num_layers=2), "is not a causal language model"),
])
def test_unsupported_type_is_refused_from_config_before_any_weight(model_type, config, reason, tmp_path,
                                                                   monkeypatch, capsys):
    """A folder with a config.json of a type that cannot be adapted and a corrupt weights file:
    one line naming the reason, exit status 2, and the loader is never called."""
    pytest.importorskip("transformers", reason="the LLM analysis needs pip install '.[models]'")
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("no weight may be read for an unsupported model type")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    model_dir = tmp_path / "model"
    transformers.AutoConfig.for_model(model_type, **config).save_pretrained(model_dir)
    (model_dir / "model.safetensors").write_bytes(b"not a weights file")
    code = main(["llm", "--model", str(model_dir), "--no-progress", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and reason in err and repr(model_type) in err


def test_type_without_record_passes_the_config_check_and_a_missing_network_is_named(tmp_path):
    """Persimmon has no record but a layer list with networks: accepted from config.json alone
    (recognition and the gate decide after loading). A config whose layers hold no network is
    refused naming the layer's children."""
    pytest.importorskip("transformers", reason="the LLM analysis needs pip install '.[models]'")
    import transformers

    from icl_verify.adapters.support import check_supported, check_structure
    from icl_verify.errors import UnsupportedModelError

    config = transformers.AutoConfig.for_model("persimmon", vocab_size=64, hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=2, num_attention_heads=4).to_dict()
    assert check_supported(config) == "persimmon"
    config = transformers.AutoConfig.for_model("mamba", vocab_size=64, hidden_size=16, num_hidden_layers=2).to_dict()
    with pytest.raises(UnsupportedModelError, match="no feed-forward network among its decoder layer's children"):
        check_structure(config)
