"""The ``icl-verify`` sub-commands, one module each (``verify``, ``reproduce``, ``llm``), over a
library that parses no arguments. Each module exposes ``register(subparsers)``, adding its
parser with ``set_defaults(run=callable)``; the callable takes the parsed arguments and returns
the exit status. Bad arguments are rejected here, before any work, by ``parser.error`` (one
line on stderr, exit status 2).

Shared helpers: the parser class, argument types that reject out-of-range numbers, and the
progress-bar switch.
"""
from __future__ import annotations

import argparse
import os
import sys


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose :meth:`error` prints one line, ``PROG: error: MESSAGE (see
    PROG --help)``, and exits with status 2 (sub-command parsers are of the same class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer ``>= 1``."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: an integer ``>= 0``."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite float ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def show_progress(no_progress: bool, stream=None) -> bool:
    """Whether to draw progress bars: not with ``--no-progress``, not when the environment sets
    ``TQDM_DISABLE`` (to anything but an empty string or ``0``/``false``), and only when the
    bars' stream (stderr by default) is a terminal, so logs and CI output stay clean."""
    if no_progress:
        return False
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
