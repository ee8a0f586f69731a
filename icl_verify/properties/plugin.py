"""The property suite's pytest plugin: Hypothesis profiles and the ratio report.

The suite's ``conftest.py`` registers it whenever pytest collects the suite; name it with
``-p icl_verify.properties.plugin`` when running the installed suite (``--pyargs
icl_verify.properties``) so that its options are known when pytest reads the command line.

Profiles (``HYPOTHESIS_PROFILE=default|ci|stress``; ``ci`` is also the default when ``CI`` is set),
``deadline=None`` in each because the first torch call of a process is slow:

- ``default``: a few examples per (property, layer); ``pytest properties/ -n 2`` in about two
  minutes on two cores.
- ``ci``: Hypothesis's own ``ci`` profile (derandomised, no example database), same budget.
- ``stress``: 1,000 examples per property, for a long run.

``--report`` prints the worst ``error / tolerance`` per claim and layer at the end of the run
(gathered from every xdist worker); ``--report-json PATH`` also writes it as JSON.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from icl_verify.properties._support import RATIOS

torch.set_num_threads(1)  # xdist runs one process per core: no oversubscription

_COMMON = dict(deadline=None, suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))
settings.register_profile("default", max_examples=10, **_COMMON)
settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=10, **_COMMON)
settings.register_profile("stress", max_examples=1000, **_COMMON)
PROFILE = os.getenv("HYPOTHESIS_PROFILE", "ci" if os.getenv("CI") else "default")
settings.load_profile(PROFILE)


def pytest_addoption(parser):
    group = parser.getgroup("icl_verify", "icl_verify property suite")
    group.addoption("--report", action="store_true",
                    help="print the worst error/tolerance ratio found per claim and layer")
    group.addoption("--report-json", metavar="PATH", default=None,
                    help="write the worst ratio per claim and layer to PATH as JSON")


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (max_examples={settings.default.max_examples})"


def _merge(rows) -> None:
    for claim, layer, ratio in rows:
        RATIOS[(claim, layer)] = max(RATIOS.get((claim, layer), 0.0), float(ratio))


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the ratios to the controller
        workeroutput["icl_ratios"] = json.dumps([[c, l, r] for (c, l), r in RATIOS.items()])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _merge(json.loads(getattr(node, "workeroutput", {}).get("icl_ratios", "[]")))


def pytest_terminal_summary(terminalreporter, config):
    path = config.getoption("report_json")
    if path:
        rows = [{"claim": c, "layer": l, "worst_ratio": r} for (c, l), r in sorted(RATIOS.items())]
        with open(path, "w") as fh:
            json.dump({"profile": PROFILE, "ratios": rows}, fh, indent=1)
    if not config.getoption("report"):
        return
    tr = terminalreporter
    tr.section("worst error / tolerance per claim and layer")
    if not RATIOS:
        tr.write_line("(no numerical property ran)")
        return
    claims = sorted({c for c, _ in RATIOS})
    layers = sorted({l for _, l in RATIOS})
    width = max(map(len, claims)) + 2
    for claim in claims:
        found = {l: RATIOS[(claim, l)] for l in layers if (claim, l) in RATIOS}
        worst = max(found, key=found.get)
        tr.write_line(f"{claim:<{width}}worst {found[worst]:.3g} ({worst})")
    tr.write_line("")
    tr.write_line(f"{'layer':<26}" + "".join(f"{c[:11]:>12}" for c in claims))
    for layer in layers:
        cells = []
        for c in claims:
            r = RATIOS.get((c, layer))
            cells.append("-" if r is None else ("inf" if math.isinf(r) else f"{r:.2g}"))
        tr.write_line(f"{layer[:25]:<26}" + "".join(f"{x:>12}" for x in cells))
