"""The documentation stands on its own: every "docs/theory.md §N" reference in the repository's
Python and Markdown files names a numbered section of ``docs/theory.md``; nothing refers to files
outside the repository or to internal issue numbers; ``mkdocs build --strict`` succeeds (a broken
link, anchor or API reference fails it); the README is a short entry point whose Python examples
run and whose test command is the one continuous integration runs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"

#: ``theory §2``, ``docs/theory.md §2``, ``theory.md §2-§4``, ``theory.md §2, §4``
REFERENCE = re.compile(r"theory(?:\.md)?\s*§\s*\d+(?:\s*(?:-|–|,|and)\s*§\s*\d+)*")
SECTION = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
#: references to the former internal note, in any of the forms the code used
OLD_REFERENCE = re.compile(r"DESIGN\s*(?:§|table)")
#: paths outside the repository (spelled in pieces so that this file does not match itself)
OUTSIDE = ("../" + "shared", "/work/" + "shared", "DESIGN" + ".md")
ISSUE_NUMBER = re.compile(r"\bissue\s+#?\d+", re.IGNORECASE)

README = ROOT / "README.md"
#: the README's size limits: an entry point, not a manual
README_CHARS, README_LINE = 8000, 400
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)

SKIP_DIRS = {".git", ".venv", ".asv", ".hypothesis", ".pytest_cache", "site", "build", "dist",
             "__pycache__", "vendor"}


def repository_files() -> list[Path]:
    """Every file of the repository: tracked and untracked-but-not-ignored when git is at hand,
    else a walk that skips build outputs and environments."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if p.is_file()]
    return sorted(p for p in files if p.is_file()
                  and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts[:-1]))


def text(path: Path) -> str | None:
    """The file as text, or None for binary files."""
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def sources(suffixes: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """``(relative path, text)`` of every text file (with one of ``suffixes``)."""
    out = []
    for p in repository_files():
        rel = p.relative_to(ROOT).as_posix()
        if suffixes and p.suffix not in suffixes:
            continue
        body = text(p)
        if body is not None:
            out.append((rel, body))
    return out


def sections() -> set[int]:
    return {int(n) for n in SECTION.findall(THEORY.read_text())}


def line_of(body: str, pos: int) -> int:
    return body.count("\n", 0, pos) + 1


def unresolved(files: list[tuple[str, str]], known: set[int]) -> list[str]:
    bad = []
    for rel, body in files:
        for m in REFERENCE.finditer(body):
            numbers = [int(n) for n in re.findall(r"§\s*(\d+)", m.group())]
            if "-" in m.group() or "–" in m.group():  # a range: every section in it
                numbers = list(range(min(numbers), max(numbers) + 1))
            missing = [n for n in numbers if n not in known]
            if missing:
                bad.append(f"{rel}:{line_of(body, m.start())}: {m.group()!r} (no section {missing})")
        for m in OLD_REFERENCE.finditer(body):
            bad.append(f"{rel}:{line_of(body, m.start())}: {m.group()!r} refers to the internal note")
    return bad


def outside_references(files: list[tuple[str, str]]) -> list[str]:
    return [f"{rel}:{line_of(body, body.index(s))}: {s!r}"
            for rel, body in files for s in OUTSIDE if s in body]


def issue_numbers(files: list[tuple[str, str]]) -> list[str]:
    return [f"{rel}:{line_of(body, m.start())}: {m.group()!r}"
            for rel, body in files for m in ISSUE_NUMBER.finditer(body)]


def test_theory_sections_are_numbered():
    assert sections() >= set(range(1, 8)), f"docs/theory.md must number sections 1-7, has {sorted(sections())}"


def test_theory_references_resolve():
    files = sources((".py", ".md"))
    assert len(files) > 20 and any(REFERENCE.search(body) for _, body in files)
    bad = unresolved(files, sections())
    assert not bad, "references to sections of docs/theory.md that do not exist:\n" + "\n".join(bad)


def test_nothing_refers_outside_the_repository():
    bad = outside_references(sources())
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)


def test_no_internal_issue_numbers():
    bad = issue_numbers(sources())
    assert not bad, "internal issue numbers:\n" + "\n".join(bad)


def test_readme_is_clean():
    readme = [("README.md", (ROOT / "README.md").read_text())]
    assert not (unresolved(readme, sections()) + outside_references(readme) + issue_numbers(readme))


@pytest.mark.parametrize("planted, check", [
    # (spelled in pieces so that this file does not match itself)
    ("see docs/theory.md" + " §9", lambda f: unresolved(f, set(range(1, 9)))),
    ("see docs/theory.md" + " §2-§12", lambda f: unresolved(f, set(range(1, 9)))),
    ("see DESIGN" + " §2", lambda f: unresolved(f, set(range(1, 9)))),
    ("see ../" + "shared/notes", outside_references),
    ("see " + "DESIGN" + ".md", outside_references),
    ("as asked in issue" + " 7", issue_numbers),
])
def test_checks_catch_planted_references(planted, check):
    assert check([("planted.py", f'"""{planted}."""\n')])
    assert not check([("clean.py", '"""see docs/theory.md §2, §4 and theory §8."""\n')])


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="building the docs needs the docs extra: pip install -e '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "theory" / "index.html").is_file()


def oversized(readme: str) -> list[str]:
    """What makes ``readme`` too long: its length over ``README_CHARS``, lines over ``README_LINE``."""
    bad = [f"{len(readme)} characters (at most {README_CHARS})"] if len(readme) > README_CHARS else []
    return bad + [f"line {i}: {len(line)} characters (at most {README_LINE})"
                  for i, line in enumerate(readme.splitlines(), 1) if len(line) > README_LINE]


def test_readme_is_short():
    bad = oversized(README.read_text(encoding="utf-8"))
    assert not bad, "README.md is an entry point; move detail to docs/:\n" + "\n".join(bad)


def test_size_check_catches_a_long_readme():
    assert oversized("x" * (README_CHARS + 1)) and oversized("short\n" + "y" * (README_LINE + 1))
    assert not oversized("x" * README_LINE + "\n")


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a registered layer stays out of this process's registry)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_readme_python_examples_run():
    """Every Python block of the README runs as written; the failed-claim example prints a pass
    and a FAIL, the layer-registration example a pass."""
    blocks = PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the README shows how to read a failed claim and how to register a layer"
    outputs = []
    for code in blocks:
        result = run_python(code)
        assert result.returncode == 0, f"README example failed:\n{code}\n{result.stderr}"
        outputs.append(result.stdout)
    assert any("(pass)" in out and "(FAIL)" in out for out in outputs), outputs
    assert "register_layer" in blocks[-1] and "(pass)" in outputs[-1], outputs[-1]


def test_ci_runs_the_readme_commands():
    """``.ci/run`` takes the README's test command from the README (``.ci/readme_command.py``):
    each of the two commands is the one fenced block after its lead-in, and the test command
    installs the extras the suite needs and runs pytest."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_command", ROOT / ".ci" / "readme_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = README.read_text(encoding="utf-8")
    blocks = [b.strip() for b in BASH_BLOCK.findall(readme)]
    tests, main = module.command("tests", readme), module.command("main", readme)
    assert tests in blocks and main in blocks
    assert "torch==2.13.0" in tests and ".[dev,models,docs]" in tests and tests.endswith("python -m pytest -n 2")
    assert "torch==2.13.0" in main and main.endswith("icl-verify verify")
    assert "readme_command.py tests" in (ROOT / ".ci" / "run").read_text()


