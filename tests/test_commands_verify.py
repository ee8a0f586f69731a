"""``icl-verify verify`` rejects bad arguments up front: one line, exit status 2."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("argv, message", [
    (["--d", "0"], "argument --d: must be at least 1, got 0"),
    (["--d", "x"], "argument --d: invalid integer 'x'"),
    (["--d", "100000"], "--d 100000 is above 256"),
    (["--context", "-3"], "argument --context: must be at least 1, got -3"),
    (["--context", "0"], "argument --context: must be at least 1, got 0"),
    (["--depth", "0"], "argument --depth: must be at least 1, got 0"),
    (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["--threads", "-1"], "argument --threads: must be at least 0, got -1"),
    (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (["--layer", "no_such_layer"], "--layer 'no_such_layer' matches no layer or architecture"),
    (["--layer", "gru", "--layer", "[x"], "--layer '[x' matches no layer or architecture"),
    (["--composition", "q*"], "--composition 'q*' matches no composition"),
    (["--layer", "gru", "--composition", "transformers"], "nothing matches --layer gru --composition transformers"),
    (["--layer", "gru", "--d", "0", "--context", "-3"], "argument --d: must be at least 1"),
    (["--json", "NOWHERE/rows.json"], "--json NOWHERE/rows.json: cannot write a file there (no folder NOWHERE)"),
    (["--json", "."], "--json .: cannot write a file there (a folder)"),
])
def test_bad_arguments(rejected, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = rejected(["verify", "--no-progress", *argv])
    assert message in line
    assert "--help" in line


def test_good_arguments_are_not_rejected(capsys):
    from icl_verify.cli import main

    assert main(["verify", "--layer", "gru", "--composition", "none", "--dtype", "float64",
                 "--d", "1", "--context", "1", "--depth", "1", "--batch", "1", "--no-progress",
                 "--no-architectures"]) == 0
    assert "passed, 0 failed" in capsys.readouterr().out


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("no_progress, env, tty, shown", [
    (False, None, True, True),
    (True, None, True, False),  # --no-progress
    (False, None, False, False),  # not a terminal: logs and CI
    (False, "1", True, False),
    (False, "true", True, False),
    (False, "0", True, True),
    (False, "", True, True),
])
def test_progress_bars(monkeypatch, no_progress, env, tty, shown):
    """Every command draws its bars only on a terminal, and never with ``TQDM_DISABLE`` set."""
    from icl_verify.commands import show_progress

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    if env is not None:
        monkeypatch.setenv("TQDM_DISABLE", env)
    assert show_progress(no_progress, _Stream(tty)) is shown


def test_typed_input_error_is_one_line(rejected, monkeypatch):
    """An input error found while running (a typed :class:`ICLVerifyError`) ends like a bad
    argument: one line, exit status 2, no traceback."""
    import icl_verify.commands.verify as command
    from icl_verify.errors import ShapeError

    def bad(*args, **kwargs):
        raise ShapeError("context must have 3 dimensions")

    monkeypatch.setattr(command, "run_verify", bad)
    assert "context must have 3 dimensions" in rejected(["verify", "--layer", "gru", "--no-progress"])
