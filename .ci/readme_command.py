"""Print one of the README's two commands: ``main`` (after "Install and run the main job") or
``tests`` (after "Install and run the tests"), the first fenced block after that lead-in, so that
CI runs exactly what the README says."""
import pathlib
import sys

LEADS = {"main": "Install and run the main job", "tests": "Install and run the tests"}


def command(which: str, readme: str) -> str:
    after = readme.split(LEADS[which], 1)[1]
    block = after.split("```", 2)[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    if len(lines) != 1:
        raise SystemExit(f"README: the block after {LEADS[which]!r} must hold one command, holds {len(lines)}")
    return lines[0]


if __name__ == "__main__":
    root = pathlib.Path(__file__).resolve().parent.parent
    print(command(sys.argv[1], (root / "README.md").read_text()))
