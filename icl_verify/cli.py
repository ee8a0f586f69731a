"""The ``icl-verify`` command: dispatches to the sub-commands of :mod:`icl_verify.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands import Parser
from .errors import ICLVerifyError

COMMANDS = (
    "icl_verify.commands.verify",
    "icl_verify.commands.reproduce",
    "icl_verify.commands.llm",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="icl-verify",
        description="Check that in-context learning is an implicit rank-one weight update.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; bad arguments and typed input errors end in one line on stderr and
    exit status 2 (``argparse``'s convention), never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ICLVerifyError as exc:
        args.parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
