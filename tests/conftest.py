"""Fixtures shared by the command tests."""
from __future__ import annotations

import pytest

from icl_verify.cli import main


@pytest.fixture
def rejected(capsys):
    """``rejected(argv)`` runs ``icl-verify argv`` in-process, asserts that it exits with status 2
    before doing any work, printing exactly one line on stderr and nothing on stdout, and
    returns that line."""

    def run(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out, err = capsys.readouterr()
        assert exc.value.code == 2, (exc.value.code, err)
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"icl-verify {argv[0]}: error: "), lines[0]
        return lines[0]

    return run
