"""``icl-verify reproduce`` rejects bad arguments up front: one line, exit status 2."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("argv, message", [
    (["fig9"], "argument figure: invalid choice: 'fig9'"),
    (["fig1"], "the following arguments are required: --out"),
    (["fig1", "--out", "OUT", "--n", "0"], "argument --n: must be at least 1, got 0"),
    (["fig1", "--out", "OUT", "--n", "2"], "--n 2: need at least 3 context examples"),
    (["fig1", "--out", "OUT", "--heads", "2"], "--heads 2 does not divide the token width d+1 = 3"),
    (["fig1", "--out", "OUT", "--heads", "-3"], "argument --heads: must be at least 1, got -3"),
    (["fig1", "--out", "OUT", "--finetune-lr", "0"], "argument --finetune-lr: must be a finite number above 0"),
    (["fig1", "--out", "OUT", "--finetune-lr", "nan"], "argument --finetune-lr: must be a finite number above 0"),
    (["fig1", "--out", "OUT", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (["fig1", "--out", "FILE"], "exists and is not a folder"),
])
def test_bad_arguments(rejected, tmp_path, argv, message):
    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / a) if a in ("OUT", "FILE") else a for a in argv]
    assert message in rejected(["reproduce", *argv, "--no-progress"])
    assert not (tmp_path / "OUT").exists()  # nothing was written
