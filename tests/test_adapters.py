"""Adapters of real transformers layers: the decomposition reproduces the unmodified layer, and
the implicit-update identities hold on every registered tiny architecture."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="the adapters need the optional extra: pip install '.[models]'")

from icl_verify.adapters import adapt_causal_lm, get_architecture, list_architectures  # noqa: E402
from icl_verify.adapters import bert, gpt2, gpt_neox, hybrid, llama, mamba, mamba2, recurrent_gemma  # noqa: E402
from icl_verify.errors import UnknownLayerError  # noqa: E402
from icl_verify.tolerance import unit_roundoff  # noqa: E402
from icl_verify.updates import context_update, run_stack_updated, run_updated, stack_updates  # noqa: E402

ARCHS = list_architectures()
TOL = 1e-12  # float64: every identity is a few roundings of O(1) quantities


def _seq(width: int, t: int = 9, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, width, generator=g, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_registry_lists_every_family():
    assert {"gpt2", "llama", "gemma", "gemma2", "recurrent_gemma", "mamba", "falcon_mamba", "mamba2", "bert",
            "gpt_neox", "jamba", "bamba", "qwen3_next"} <= set(ARCHS)
    with pytest.raises(UnknownLayerError, match="registered"):
        get_architecture("no_such_arch")


def _ids(t: int = 9) -> torch.Tensor:
    return torch.randint(0, 64, (2, t), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("make", [lambda: llama.tiny_lm("llama"), lambda: llama.tiny_lm("gemma"),
                                  lambda: llama.tiny_lm("gemma2"), gpt2.tiny_gpt2, gpt_neox.tiny_gpt_neox,
                                  lambda: gpt_neox.tiny_gpt_neox(parallel=False)],
                         ids=["llama", "gemma", "gemma2", "gpt2", "gpt_neox_parallel", "gpt_neox_sequential"])
def test_whole_model_matches_transformers(make):
    """embed -> adapter stack -> head equals the unmodified model's logits (sliding windows,
    soft-capping, rotary and absolute positions included), and each layer's hidden state."""
    model = make()
    lm = adapt_causal_lm(model)
    ids = _ids()
    out = model(ids, output_hidden_states=True)
    xs = lm.stack.block_inputs(lm.embed(ids))
    for l in range(len(lm.stack)):
        assert _rel(xs[l], out.hidden_states[l]) <= TOL
    assert _rel(lm.head(xs[-1]), out.logits) <= TOL


def test_mamba_matches_transformers():
    model = mamba.tiny_mamba()
    stack = mamba.mamba_stack(model)
    ids = _ids()
    out = model(ids, output_hidden_states=True, use_cache=False)
    xs = stack.block_inputs(model.embeddings(ids))
    for l in range(len(stack)):  # Mamba records each layer's output
        assert _rel(xs[l + 1], out.hidden_states[l]) <= TOL


def test_recurrent_gemma_matches_transformers_both_block_kinds():
    model = recurrent_gemma.tiny_recurrent_gemma()
    stack = recurrent_gemma.recurrent_gemma_stack(model)
    assert [b.kind for b in stack.blocks] == ["recurrent", "attention"]
    ids = _ids()
    out = model(ids, use_cache=False)
    x0 = model.embed_tokens(ids) * model.normalizer.type(torch.float64)
    assert _rel(model.final_norm(stack(x0)), out.last_hidden_state) <= TOL


@pytest.mark.parametrize("make", [mamba.tiny_mamba_lm, lambda: mamba.tiny_mamba_lm("falcon_mamba"),
                                  mamba2.tiny_mamba2_lm], ids=["mamba", "falcon_mamba", "mamba2"])
def test_whole_ssm_model_matches_transformers(make):
    """Each layer's output to float64 rounding; the logits to float32 rounding, since these
    models' own forward rounds its logits to float32 (the adapted head keeps float64)."""
    model = make()
    lm = adapt_causal_lm(model)
    ids = _ids()
    out = model(ids, output_hidden_states=True, use_cache=False)
    xs = lm.stack.block_inputs(lm.embed(ids))
    for l in range(len(lm.stack)):  # these models record each layer's output
        assert _rel(xs[l + 1], out.hidden_states[l]) <= TOL
    assert out.logits.dtype == torch.float32
    assert _rel(lm.head(xs[-1]), out.logits.double()) <= unit_roundoff(torch.float32)


def test_whole_recurrent_gemma_matches_transformers():
    """Scaled embeddings, both block kinds, final norm and soft-capped logits."""
    model = recurrent_gemma.tiny_recurrent_gemma_lm()
    lm = adapt_causal_lm(model)
    ids = _ids()
    assert _rel(lm.head(lm.stack(lm.embed(ids))), model(ids, use_cache=False).logits) <= TOL


@pytest.mark.parametrize("make, kinds", [
    (hybrid.tiny_jamba, [("recurrent", "Gated"), ("attention", "MoE"), ("recurrent", "Gated"), ("attention", "MoE")]),
    (hybrid.tiny_bamba, [("recurrent", "Gated"), ("attention", "Gated"), ("recurrent", "Gated")]),
    (hybrid.tiny_qwen3_next, [("recurrent", "Gated"), ("recurrent", "MoE"), ("attention", "MoE")]),
], ids=["jamba", "bamba", "qwen3_next"])
def test_whole_hybrid_model_matches_transformers(make, kinds):
    """Every mixer kind and feed-forward kind of the tiny config is exercised; each layer's
    input and the logits equal the unmodified model's."""
    model = make()
    lm = adapt_causal_lm(model)
    assert [(b.kind, type(b.reader).__name__) for b in lm.stack.blocks] == kinds
    ids = _ids()
    out = model(ids, output_hidden_states=True, use_cache=False)
    xs = lm.stack.block_inputs(lm.embed(ids))
    for l in range(len(lm.stack)):
        assert _rel(xs[l], out.hidden_states[l]) <= TOL
    assert _rel(lm.head(xs[-1]), out.logits) <= TOL


@pytest.mark.parametrize("causal", [True, False], ids=["decoder", "encoder"])
def test_bert_matches_transformers(causal):
    model = bert.tiny_bert(causal=causal)
    stack = bert.bert_stack(model, causal=causal)
    out = model(_ids(), output_hidden_states=True)
    xs = stack.block_inputs(out.hidden_states[0])
    for l in range(1, len(xs)):
        assert _rel(xs[l], out.hidden_states[l]) <= TOL


@pytest.mark.parametrize("name", ARCHS)
def test_decomposition_reproduces_each_layer(name):
    """``output(W z + b, s)`` of the adapter equals the wrapped layer's own forward."""
    info = get_architecture(name)
    stack = info.build(seed=1)
    x = _seq(info.width)
    for block in stack.blocks:
        dec = block.decompose(x)
        assert dec.z.shape[:2] == x.shape[:2] and dec.s.shape == x.shape
        assert _rel(block.output(block.pre_activations(dec.z), dec.s), block(x)) <= TOL
        for w, b in block.first_layers():
            assert w.shape[1] == dec.z.shape[-1] and (b is None or b.shape == w.shape[:1])


@pytest.mark.parametrize("name", ARCHS)
def test_identity_single_block_and_stack(name):
    info = get_architecture(name)
    stack = info.build(seed=2)
    x = _seq(info.width, seed=5)
    block = stack.blocks[0]
    upd = context_update(block, x[:, :-1], x[:, -1])
    assert _rel(run_updated(block, x[:, -1], upd), block(x)[:, -1]) <= TOL
    ups = stack_updates(stack, x)
    assert _rel(run_stack_updated(stack, x[:, -1], ups), stack(x)[:, -1]) <= TOL
    assert _rel(run_stack_updated(stack, x[:, -1], ups, dense=False), stack(x)[:, -1]) <= TOL


def test_parallel_block_update_is_bypass_only():
    """GPT-NeoX's parallel block: the network reads the token alone, so dW = 0 exactly and the
    whole effect of the context is the bypass shift."""
    stack = get_architecture("gpt_neox").build()
    x = _seq(32)
    for upd in stack_updates(stack, x):
        assert float(upd.norms().detach().abs().max()) == 0.0
        assert float(upd.shift.detach().norm()) > 0


def test_length_one_sequence_is_position_zero():
    """The query alone is position 0: rotary positions at t=0 are the identity rotation."""
    stack = get_architecture("llama").build()
    x = _seq(32, t=1)
    block = stack.blocks[0]
    ref = block.layer(x, position_embeddings=block.rotary(x, torch.zeros(2, 1, dtype=torch.long)))
    assert _rel(block(x), ref) <= TOL


def test_registry_is_empty_without_transformers(monkeypatch):
    """Without transformers the registry lists nothing and building says how to install it."""
    from icl_verify.adapters import _registry

    monkeypatch.setattr(_registry, "transformers_available", lambda: False)
    assert _registry.list_architectures() == []
    with pytest.raises(ImportError, match="icl-verify\\[models\\]"):
        get_architecture("llama").build()
