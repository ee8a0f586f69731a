"""A layer registered by a user runs through every property with no test code: once as a pytest
plugin (``pytest properties/ -p my_layers``), once through the entry-point group
``icl_verify.layers`` of an installed distribution (a ``.dist-info`` on ``sys.path``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
    def forward(self, x):
        h, out = torch.zeros_like(x[:, 0]), []
        for u in self.v(x).unbind(1):
            h = h / 2 + u
            out.append(h)
        return self.o(torch.tanh(torch.stack(out, 1)))

@register_layer("decaying_rnn", dims=(2, 16))
def decaying_rnn(d, *, heads):
    return DecayingRNN(d)
'''

#: every property file that is parametrised over the registry (the ground truth is one fixed
#: construction, von Oswald et al.'s, not a property of a layer type)
PROPERTY_FILES = sorted(p.name for p in (ROOT / "properties").glob("test_*.py")
                        if p.name != "test_ground_truth.py")


def pytest_run(tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
               HYPOTHESIS_PROFILE="ci")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "properties", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-q", "-rA", "-k", "decaying_rnn", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def files_covered(output: str) -> set[str]:
    return set(re.findall(r"properties/(test_\w+\.py)::\w+\[[^\]]*decaying_rnn", output))


def test_user_layer_through_plugin(tmp_path):
    (tmp_path / "my_layers.py").write_text(USER_LAYER)
    out = pytest_run(tmp_path, "-p", "my_layers", "--collect-only")
    assert files_covered(out) == set(PROPERTY_FILES), out[-3000:]


def test_user_layer_through_entry_point(tmp_path):
    (tmp_path / "my_layers.py").write_text(USER_LAYER)
    dist = tmp_path / "my_layers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-layers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[icl_verify.layers]\ndecaying_rnn = my_layers\n")
    out = pytest_run(tmp_path, "--report")
    assert files_covered(out) == set(PROPERTY_FILES), out[-3000:]
    assert re.search(r"\d+ passed", out) and "failed" not in out
    assert "decaying_rnn" in out.split("worst error / tolerance")[-1]
