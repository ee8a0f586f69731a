"""A layer registered by a user runs through every property with no test code: as a pytest plugin
in a checkout (``pytest properties/ -p my_layers``), through the entry-point group
``icl_verify.layers`` of an installed distribution (a ``.dist-info`` on ``sys.path``), and through
the installed suite (``pytest --pyargs icl_verify.properties``) from a folder outside the
checkout, where a wrong ``step`` fails the fast-path property. A registered layer without a fast
path leaves the project's own tests of its built-in layers passing."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_LAYER = '''
import torch
from torch import nn
from icl_verify import register_layer

class DecayingRNN(nn.Module):
    """h_t = h_{t-1} / 2 + W_v x_t, output W_o tanh(h_t): (B, T, d) -> (B, T, d)."""
    def __init__(self, d):
        super().__init__()
        self.v, self.o = nn.Linear(d, d), nn.Linear(d, d)

    def states(self, x, *, output=True):
        h = [torch.zeros_like(x[:, 0])]
        for u in self.v(x).unbind(1):
            h.append(h[-1] / 2 + u)
        h = torch.stack(h, 1)
        return (self.o(torch.tanh(h[:, 1:])) if output else None), h

    def forward(self, x):
        return self.states(x)[0]

    def step(self, h, q):
        return self.o(torch.tanh(h / 2 + self.v(q)))

@register_layer("decaying_rnn", dims=(2, 16))
def decaying_rnn(d, *, heads):
    return DecayingRNN(d)
'''

WRONG_STEP = USER_LAYER.replace("torch.tanh(h / 2 + self.v(q))", "torch.tanh(h + self.v(q))")
"""The same layer with the decay dropped from ``step`` (``forward`` untouched)."""

FORWARD_ONLY = '''
from torch import nn
from icl_verify import register_layer

register_layer("pointwise_user_layer", lambda d, *, heads: nn.Linear(d, d))
'''

PROPERTY_FILES = sorted(p.name for p in (ROOT / "icl_verify" / "properties").glob("test_*.py")
                        if p.name != "test_ground_truth.py")
"""Every property file parametrised over the registry (the ground truth is one fixed construction,
von Oswald et al.'s, not a property of a layer type)."""


def pytest_run(cwd: Path, pythonpath: list[Path], *args: str, ok: bool = True) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, pythonpath)), HYPOTHESIS_PROFILE="ci")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-q", "-rA", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def files_covered(output: str) -> set[str]:
    return set(re.findall(r"(test_\w+\.py)::\w+\[[^\]]*decaying_rnn", output))


def test_user_layer_through_plugin(tmp_path):
    (tmp_path / "my_layers.py").write_text(USER_LAYER)
    out = pytest_run(ROOT, [tmp_path, ROOT], "properties", "-p", "my_layers", "-k", "decaying_rnn",
                     "--collect-only")
    assert files_covered(out) == set(PROPERTY_FILES), out[-3000:]


def test_user_layer_through_entry_point(tmp_path):
    (tmp_path / "my_layers.py").write_text(USER_LAYER)
    dist = tmp_path / "my_layers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-layers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[icl_verify.layers]\ndecaying_rnn = my_layers\n")
    out = pytest_run(ROOT, [tmp_path, ROOT], "properties", "-k", "decaying_rnn", "--report")
    assert files_covered(out) == set(PROPERTY_FILES), out[-3000:]
    assert re.search(r"\d+ passed", out) and "failed" not in out
    assert "decaying_rnn" in out.split("worst error / tolerance")[-1]


def test_builtin_tests_hold_with_a_user_layer_registered(tmp_path):
    """The project's checks of its own layers (a fast path for each, shapes, causality, ...)
    select the built-in layers: a registered layer without a fast path changes none of them."""
    (tmp_path / "other_layers.py").write_text(FORWARD_ONLY)
    args = ("tests/test_prefix_cache.py", "tests/test_layers.py", "-p", "other_layers")
    collected = pytest_run(ROOT, [tmp_path, ROOT], *args, "--collect-only")
    assert "pointwise_user_layer" not in collected and "test_every_builtin_layer_has_a_fast_path" in collected
    out = pytest_run(ROOT, [tmp_path, ROOT], *args, "-k", "every_builtin or registry_not_empty or rng")
    assert re.search(r"3 passed", out), out[-2000:]


def install(tmp_path: Path) -> Path:
    """A non-editable install of this checkout's package into ``tmp_path / "site"``, without its
    dependencies (the running interpreter provides them): built by the environment's setuptools
    where it can build wheels (offline), else in an isolated build environment from the index;
    skipped when neither is possible."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "icl_verify", src / "icl_verify", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)]
    for extra in (["--no-index", "--no-build-isolation"], []):
        proc = subprocess.run(pip + extra, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            return site
    if re.search(r"No matching distribution|Could not find a version|NewConnectionError", proc.stderr):
        pytest.skip("no setuptools able to build wheels here, and no package index to fetch one")
    raise AssertionError(proc.stderr[-3000:])


@pytest.mark.skipif(not importlib.util.find_spec("pip"), reason="installing the package needs pip")
def test_installed_suite_runs_on_a_user_layer_from_any_folder(tmp_path):
    """The documented command (two of its modules), from a folder holding only the user's module,
    against an installed copy of the package: the properties pass on the layer, and the fast-path
    property alone fails on it once ``step`` is wrong."""
    site, work = install(tmp_path), tmp_path / "work"
    work.mkdir()
    args = ("--pyargs", "icl_verify.properties.test_prefix_cache", "icl_verify.properties.test_telescoping",
            "-p", "icl_verify.properties.plugin", "-p", "my_layers",
            "-k", "decaying_rnn and (fast_prefix or increments)", "--report")
    (work / "my_layers.py").write_text(USER_LAYER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(work)]))
    where = subprocess.run([sys.executable, "-c", "import icl_verify.properties as p; print(p.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site), where
    out = pytest_run(work, [site, work], *args)
    assert re.search(r"\d+ passed", out) and "failed" not in out, out[-3000:]
    assert "fast[prefixes]" in out.split("worst error / tolerance")[-1]
    (work / "my_layers.py").write_text(WRONG_STEP)
    out = pytest_run(work, [site, work], *args, ok=False)
    assert set(re.findall(r"FAILED \S*::(\w+)\[", out)) == {"test_fast_prefix_updates"}, out[-3000:]
