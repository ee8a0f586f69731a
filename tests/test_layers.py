"""Example-based checks of every registered contextual layer: shapes and dtypes, strict
causality, prefix consistency, determinism under a seed, and a non-degenerate output on a
one-token sequence."""
from __future__ import annotations

import pytest
import torch

from icl_verify.layers import get_layer, list_layers

DTYPES = (torch.float32, torch.float64)
T = 7


def cases() -> list[tuple[str, int]]:
    """Every (layer name, head count) pair in the registry."""
    return [(name, h) for name in list_layers(builtin=True) for h in get_layer(name).heads]


def pick_dim(name: str, heads: int) -> int:
    """A small valid width, at least 4 when the registry allows one."""
    dims = get_layer(name).valid_dims(heads)
    assert dims, f"{name!r} has no valid width with heads={heads}"
    return next((d for d in dims if d >= 4), dims[-1])


def tokens(b: int, t: int, d: int, dtype: torch.dtype, seed: int = 1234) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g, dtype=torch.float64).to(dtype)


def build(name: str, heads: int, d: int, *, seed: int = 0, dtype=torch.float64):
    return get_layer(name).build(d, heads=heads, seed=seed, dtype=dtype).eval()


def test_registry_not_empty():
    names = list_layers()
    for expected in ("softmax_attention", "linear_attention", "linear_attention_elu",
                     "elman_rnn", "gru", "lstm", "griffin_recurrent",
                     "griffin_local_attention", "mamba", "gated_deltanet", "mamba2", "mlstm",
                     "slstm", "rwkv7", "retention", "mingru", "grouped_query_attention",
                     "multi_query_attention", "latent_attention", "sliding_window_attention",
                     "alibi_attention"):
        assert expected in names


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,heads", cases())
def test_shape_and_dtype(name, heads, dtype):
    d = pick_dim(name, heads)
    layer = build(name, heads, d, dtype=dtype)
    assert all(p.dtype == dtype for p in layer.parameters())
    with torch.no_grad():
        y = layer(tokens(2, T, d, dtype))
    assert y.shape == (2, T, d)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,heads", cases())
def test_causal(name, heads):
    d = pick_dim(name, heads)
    layer = build(name, heads, d)
    x = tokens(2, T, d, torch.float64)
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        y = layer(x)
        for t in range(T):
            x2 = x.clone()
            x2[:, t] += torch.randn(2, d, generator=g, dtype=torch.float64)
            y2 = layer(x2)
            assert torch.equal(y2[:, :t], y[:, :t]), f"{name}: token {t} leaked into the past"
            assert not torch.allclose(y2[:, t], y[:, t]), f"{name}: token {t} ignored at {t}"


@pytest.mark.parametrize("name,heads", cases())
def test_prefix_consistent(name, heads):
    """``A(x_1..x_t) == A(x_1..x_T)[:t]`` to rounding: a layer may compute a sequence's last
    output another way (the scan layers' fused ``read``), never another value."""
    d = pick_dim(name, heads)
    layer = build(name, heads, d)
    x = tokens(2, T, d, torch.float64)
    with torch.no_grad():
        y = layer(x)
        for t in range(1, T):
            err = (layer(x[:, :t]) - y[:, :t]).abs().max().item()
            bound = 64 * torch.finfo(torch.float64).eps * (y[:, :t].abs().max().item() + 1.0)
            assert err <= bound, f"{name}: output at {t - 1} differs by {err:.3g} without the later tokens"


@pytest.mark.parametrize("name,heads", cases())
def test_deterministic_under_seed(name, heads):
    d = pick_dim(name, heads)
    x = tokens(2, T, d, torch.float64)
    with torch.no_grad():
        a = build(name, heads, d, seed=3)(x)
        b = build(name, heads, d, seed=3)(x)
        c = build(name, heads, d, seed=4)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_build_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    for name in list_layers(builtin=True):
        info = get_layer(name)
        build(name, info.heads[0], pick_dim(name, info.heads[0]))
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,heads", cases())
def test_single_token_output_nonzero(name, heads, dtype):
    d = pick_dim(name, heads)
    layer = build(name, heads, d, dtype=dtype)
    x = tokens(5, 1, d, dtype, seed=7)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (5, 1, d)
    assert (y.norm(dim=-1) > 0).all(), f"{name}: A(x) = 0 for a one-token sequence"
