"""Fixtures shared by the command tests."""
from __future__ import annotations

import pytest
import torch

from icl_verify.cli import main

torch.set_num_threads(1)  # pytest-xdist runs one process per core: more threads would spin

VERSIONED = ("torch", "transformers", "numpy", "hypothesis", "accelerate")


def pytest_report_header(config):
    """The versions of the dependencies whose releases could change a verdict."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return "dependencies: " + ", ".join(f"{name} {installed(name)}" for name in VERSIONED)


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
