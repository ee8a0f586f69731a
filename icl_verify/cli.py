"""The ``icl-verify`` command: dispatches to the sub-commands of :mod:`icl_verify.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "icl_verify.commands.verify",
    "icl_verify.commands.reproduce",
    "icl_verify.commands.llm",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icl-verify",
        description="Check that in-context learning is an implicit rank-one weight update.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
