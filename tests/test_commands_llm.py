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
    import icl_verify.llm

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded for bad arguments")

    monkeypatch.setattr(icl_verify.llm, "load_model", no_loading)
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

    import icl_verify.llm
    from icl_verify.adapters.llama import tiny_lm

    model = tiny_lm("llama").to(torch.float32).requires_grad_(False)
    monkeypatch.setattr(icl_verify.llm, "load_model", lambda *a, **k: (model, CharTokenizer()))
    monkeypatch.chdir(tmp_path)
    main(["llm", "--task", "antonyms", "--shots", "1", "--dtype", "float64", "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    folder = tmp_path / "icl-verify-llm"
    assert out[0] == f"icl-verify llm: writing the CSV, JSON and PNG files to {folder.resolve()}/"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icl-verify-llm"]
    assert (folder / "summary.json").is_file() and (folder / "llm_analysis.png").is_file()
