"""Every registry (layers, compositions, architectures, model types, tasks) behaves the same."""
import pytest

from icl_verify import DuplicateNameError, Registry, UnknownNameError
from icl_verify.adapters._registry import ARCHITECTURES, MODEL_ADAPTERS
from icl_verify.blocks import COMPOSITIONS
from icl_verify.layers._registry import LAYERS
from icl_verify.llm import TASKS

REGISTRIES = [LAYERS, COMPOSITIONS, ARCHITECTURES, MODEL_ADAPTERS, TASKS]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_unknown_and_duplicate_names(registry):
    with pytest.raises(UnknownNameError, match=f"no {registry.kind} named 'nope'; registered: "):
        registry.get("nope")
    name = registry.names()[0]
    with pytest.raises(DuplicateNameError, match=f"a {registry.kind} named '{name}' is already"):
        registry.add(name, registry.get(name))
    assert registry.add(name, registry.get(name), replace=True) is registry.get(name)


def test_wildcards_and_removal():
    r = Registry("thing")
    for n in ("alpha", "alps", "beta"):
        r.add(n, n.upper())
    assert r.names("al*") == ["alpha", "alps"]
    assert r.names(where=lambda rec: rec.startswith("B")) == ["beta"]
    assert r["beta"] == "BETA" and "beta" in r and len(r) == 3 and list(r) == ["alpha", "alps", "beta"]
    r.remove("beta")
    with pytest.raises(UnknownNameError, match="registered: alpha, alps"):
        r.remove("beta")
