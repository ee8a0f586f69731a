"""Every registry (layers, compositions, architectures, model types, tasks) behaves the same."""
import pytest

from icl_verify import DuplicateNameError, Registry, UnknownNameError
from icl_verify.adapters._registry import ARCHITECTURES, MODEL_ADAPTERS
from icl_verify.blocks import COMPOSITIONS
from icl_verify.layers._registry import LAYERS
from icl_verify.causal_lm import TASKS

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


def test_layer_origin_marks_the_builtin_layers():
    """Every layer of the package is built-in (origin under ``icl_verify.``); one registered here
    is not, and ``list_layers(builtin=...)`` splits the two."""
    from torch import nn

    from icl_verify.layers import get_layer, list_layers, register_layer, unregister_layer

    builtin = list_layers(builtin=True)
    assert builtin and all(get_layer(n).origin.startswith("icl_verify.layers.") for n in builtin)
    register_layer("foreign_pointwise", lambda d, *, heads: nn.Linear(d, d))
    try:
        assert get_layer("foreign_pointwise").origin == __name__
        assert "foreign_pointwise" in list_layers(builtin=False) and "foreign_pointwise" in list_layers()
        assert list_layers(builtin=True) == builtin
        assert sorted(builtin + list_layers(builtin=False)) == list_layers()
    finally:
        unregister_layer("foreign_pointwise")


def test_registered_dtypes_restrict_the_drawn_blocks():
    """A layer registered with ``dtypes`` gets blocks in those dtypes only, from every strategy."""
    import torch
    from hypothesis import given, settings
    from torch import nn

    from icl_verify.layers import register_layer, unregister_layer
    from icl_verify.strategies import blocks, dtypes

    register_layer("wide_only", lambda d, *, heads: nn.Linear(d, d), dtypes=(torch.float32, torch.float64))
    drawn = set()

    @settings(max_examples=40, database=None, derandomize=True)
    @given(spec=blocks("wide_only"), other=dtypes("wide_only"))
    def draw(spec, other):
        drawn.update((spec.dtype, other))

    try:
        draw()
    finally:
        unregister_layer("wide_only")
    assert drawn == {torch.float32, torch.float64}
