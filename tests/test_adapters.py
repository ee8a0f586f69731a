"""Adapters of real transformers layers: the decomposition reproduces the unmodified layer, and
the implicit-update identities hold on every registered tiny architecture."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers", reason="the adapters need the optional extra: pip install '.[models]'")

from icl_verify.adapters import (  # noqa: E402
    AdaptedLM, LayerRecord, adapt_causal_lm, adapt_record_lm, get_architecture, list_architectures, list_records,
    register_record, tiny_causal_lm,
)
from icl_verify.adapters.catalog import POST_NORMS  # noqa: E402
from icl_verify.adapters import hybrid, nemotron_h, recurrent_gemma  # noqa: E402
from icl_verify.adapters import mamba2_blocks as mamba2, mamba_blocks as mamba  # noqa: E402
from icl_verify.adapters.ffn import Gated  # noqa: E402
from icl_verify.adapters.gate import (  # noqa: E402
    check_reconstruction, layer_gaps, layer_offset, probe_ids, reconstruction,
)
from icl_verify.adapters.moe import MoE, SigmoidMoE  # noqa: E402
from icl_verify.errors import (  # noqa: E402
    ReconstructionError, UnknownLayerError, UnknownNameError, UnsupportedModelError,
)
from icl_verify.causal_lm.through_model import through_model_check  # noqa: E402
from icl_verify.tolerance import unit_roundoff  # noqa: E402
from icl_verify.updates import (  # noqa: E402
    context_update, run_stack_updated, run_updated, stack_updates, updated_inputs,
)

ARCHS = list_architectures()
RECORDS = list_records()
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "phi3",
              "cohere", "starcoder2"}
PARALLEL = {"gpt_neox", "gptj", "phi", "falcon"}
MOE = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"]
SSM_LMS = {"mamba": mamba.tiny_mamba_lm, "falcon_mamba": lambda: mamba.tiny_mamba_lm("falcon_mamba"),
           "mamba2": mamba2.tiny_mamba2_lm, "nemotron_h": nemotron_h.tiny_nemotron_h}
HYBRID = {"jamba": hybrid.tiny_jamba, "bamba": hybrid.tiny_bamba, "qwen3_next": hybrid.tiny_qwen3_next,
          "lfm2": hybrid.tiny_lfm2, "falcon_h1": hybrid.tiny_falcon_h1}
TOL = 1e-12  # float64: every identity is a few roundings of O(1) quantities


def _seq(width: int, t: int = 9, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, width, generator=g, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_registry_lists_every_family():
    assert {"gpt2", "recurrent_gemma", "mamba", "bert"} | LLAMA_LIKE | PARALLEL | set(MOE) <= set(ARCHS)
    assert {"falcon_mamba", "mamba2", "nemotron_h"} | set(HYBRID) <= set(ARCHS)
    assert set(RECORDS) <= set(ARCHS)
    with pytest.raises(UnknownLayerError, match="registered"):
        get_architecture("no_such_arch")


def _ids(t: int = 9) -> torch.Tensor:
    return torch.randint(0, 64, (2, t), generator=torch.Generator().manual_seed(3))


def _whole_models():
    params = [pytest.param(name, {}, id=name) for name in RECORDS]
    return params + [pytest.param("gpt_neox", {"use_parallel_residual": False}, id="gpt_neox_sequential")]


@pytest.mark.parametrize("model_type, overrides", _whole_models())
def test_whole_model_matches_transformers(model_type, overrides):
    """embed -> adapter stack -> head equals the unmodified model's logits (sliding windows,
    soft-capping, rotary and absolute positions included), and each layer's hidden state."""
    model = tiny_causal_lm(model_type, **overrides)
    assert_matches_transformers(model, adapt_causal_lm(model))


def assert_matches_transformers(model, lm) -> None:
    """Every layer's input and the logits of ``lm`` (embed -> adapter stack -> head) equal the
    unmodified ``model``'s hidden states and logits."""
    ids = _ids()
    out = model(ids, output_hidden_states=True, use_cache=False)
    xs = lm.stack.block_inputs(lm.embed(ids))
    for l in range(len(lm.stack)):
        assert _rel(xs[l], out.hidden_states[l]) <= TOL
    assert _rel(lm.head(xs[-1]), out.logits) <= TOL


@pytest.mark.parametrize("model_type", RECORDS)
def test_through_the_models_own_forward(model_type):
    """W + dW written into the real parameters and ds added where the residual joins: the
    unmodified forward on the query alone gives the full prompt's logits; without the updates
    (the negative control) it does not."""
    model = tiny_causal_lm(model_type)
    lm = adapt_causal_lm(model)
    ids = _ids()[:1]
    with torch.no_grad():
        check = through_model_check(lm, ids, stack_updates(lm.stack, lm.embed(ids)))
    assert check["logits_rel_diff"] <= TOL
    assert check["control_rel_diff"] >= 1e-2
    assert all(not p.requires_grad or torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("make", [*HYBRID.values(), recurrent_gemma.tiny_recurrent_gemma_lm, *SSM_LMS.values()],
                         ids=[*HYBRID, "recurrent_gemma", *SSM_LMS])
def test_through_the_models_own_forward_recurrent_and_hybrid(make):
    """The same check for the recurrent, state-space and hybrid models. Mamba-family models round
    their logits to float32 in their own forward: both sides carry that rounding (each at most
    ``u`` of float32 relative), so the bound is ``2 u_float32`` there."""
    model = make()
    lm = adapt_causal_lm(model)
    ids = _ids()[:1]
    with torch.no_grad():
        check = through_model_check(lm, ids, stack_updates(lm.stack, lm.embed(ids)))
    rounded = model.config.model_type in SSM_LMS
    assert check["logits_rel_diff"] <= (2 * unit_roundoff(torch.float32) if rounded else TOL)
    assert check["control_rel_diff"] >= 1e-2


def test_through_model_check_catches_a_wrong_update():
    """Break the update (drop one first matrix's dW): the logits differ far beyond TOL."""
    model = tiny_causal_lm("llama")
    lm = adapt_causal_lm(model)
    ids = _ids()[:1]
    with torch.no_grad():
        ups = stack_updates(lm.stack, lm.embed(ids))
        broken = [type(u)((torch.zeros_like(u.left[0]),) + u.left[1:], u.right, u.shift, u.target, u.reference)
                  for u in ups]
        assert through_model_check(lm, ids, broken)["logits_rel_diff"] > 1e-6
        no_shift = [type(u)(u.left, u.right, torch.zeros_like(u.shift), u.target, u.reference) for u in ups]
        assert through_model_check(lm, ids, no_shift)["logits_rel_diff"] > 1e-6


def test_through_model_leaves_parameters_unchanged():
    model = tiny_causal_lm("mixtral")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lm = adapt_causal_lm(model)
    ids = _ids()[:1]
    with torch.no_grad():
        through_model_check(lm, ids, stack_updates(lm.stack, lm.embed(ids)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("model_type", MOE)
def test_moe_update_covers_router_and_every_expert(model_type):
    """The router reads z: with the update, the router logits at the reference equal the
    contextual ones (the same experts are chosen); one left factor per matrix (router, each
    expert's fused gate/up), no dense matrix per expert."""
    stack = get_architecture(model_type).build(seed=4)
    x = _seq(32)
    block = stack.blocks[0]
    experts = block.layer.mlp.experts.gate_up_proj
    ups = stack_updates(stack, x, every_position=True)
    upd = ups[0]
    hs, _ = updated_inputs(block, upd, dense=False)
    router = block.layer.mlp.gate
    target_logits = torch.nn.functional.linear(upd.target.z, router.weight)
    assert _rel(hs[0], target_logits) <= TOL
    k = router.top_k
    assert torch.equal(hs[0].topk(k, dim=-1).indices.sort(-1).values,
                       target_logits.topk(k, dim=-1).indices.sort(-1).values)
    assert len(upd.left) >= 1 + experts.shape[0]
    assert [u.shape for u in upd.left[1:1 + experts.shape[0]]] == [(2, 9, experts.shape[1])] * experts.shape[0]
    assert upd.right.shape == (2, 9, 32)
    for w, _ in block.first_layers()[1:1 + experts.shape[0]]:
        assert w.untyped_storage().data_ptr() == experts.untyped_storage().data_ptr()  # views, no copies


def test_bad_layout_is_a_typed_error():
    """A record that does not describe the model fails with a typed error saying why."""
    with pytest.raises(UnsupportedModelError, match="layout"):
        adapt_record_lm(tiny_causal_lm("gpt2"), LayerRecord("gpt2", Gated()))


@pytest.mark.parametrize("model_type, wiring, post_norm", [
    ("llama", "sequential", None), ("olmo2", "sequential", "post_feedforward_layernorm"),
    ("gemma2", "sequential", "post_feedforward_layernorm"), ("gpt_neox", "parallel", None),
    ("gpt2", "sequential", None),
    ("openai-gpt", "post", "ln_2"), ("opt", "sequential", None),
    ("flex_olmo", "sequential", "post_feedforward_layernorm"), ("qwen2_moe", "sequential", None),
    ("roberta", "post", "output.LayerNorm"), ("granitemoe", "sequential", None), ("granite", "sequential", None),
])
def test_type_without_record_is_recognised_from_its_module_tree(model_type, wiring, post_norm):
    """A model whose type has no record (or whose name is changed): the record inferred from its
    modules has the expected wiring and post-norm, calls each layer as the model does, and the
    adapted model matches the unmodified one at every layer and in the logits. Mixtures of
    experts (FlexOlmo; Qwen2-MoE and its gated shared expert; Granite-MoE, top k of the logits
    first) get the reader whose routing passes the gate; RoBERTa, a BERT layer with its own head
    module (transform, norm, output matrix)."""
    model = tiny_causal_lm(model_type, **{"flex_olmo": FLEX_OLMO, "qwen2_moe": QWEN2_MOE,
                                          "granitemoe": MINIMAX_M2}.get(model_type, {}))
    model.config.model_type = "no_such_type"
    lm = adapt_causal_lm(model)
    block = lm.stack.blocks[0]
    assert block.record.model_type == "no_such_type" and block.record.own_calls
    assert (block.wiring, block.record.post_ffn_norm) == (wiring, post_norm)
    assert_matches_transformers(model, lm)


def test_recognised_record_is_gated(monkeypatch):
    """A recognised record is a proposal: one that leaves out Olmo 2's post-norms is refused."""
    from icl_verify.adapters import recognise

    model = tiny_causal_lm("olmo2")
    model.config.model_type = "no_such_type"
    right = recognise.recognise
    monkeypatch.setattr(recognise, "recognise",
                        lambda m: [dataclasses.replace(r, post_ffn_norm=None) for r in right(m)])
    with pytest.raises(ReconstructionError, match="layer 0"):
        adapt_causal_lm(model)


def test_unrecognised_layout_names_the_part():
    """BLOOM adds the residual inside its MLP: no wiring reproduces the layer; the error names
    what was looked for, and the override."""
    with pytest.raises(UnsupportedModelError, match=r"'bloom'\) is not recognised: the decoder layer's output is "
                                                    r"none of .*register_record"):
        adapt_causal_lm(tiny_causal_lm("bloom"))


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


@pytest.mark.parametrize("make", SSM_LMS.values(), ids=SSM_LMS)
def test_whole_ssm_model_matches_transformers(make):
    """Each layer's input and output to float64 rounding; the logits to float32 rounding, since
    these models' own forward rounds its logits to float32 (the adapted head keeps float64).
    The model's hidden states are layer inputs or layer outputs (Mamba-2 switched from outputs
    to inputs in transformers 5.25); the first entry says which."""
    model = make()
    lm = adapt_causal_lm(model)
    ids = _ids()
    out = model(ids, output_hidden_states=True, use_cache=False)
    xs = lm.stack.block_inputs(lm.embed(ids))
    assert len(out.hidden_states) == len(lm.stack) + 1
    assert max(layer_gaps(out.hidden_states, xs).values()) <= TOL
    assert out.logits.dtype == torch.float32
    assert _rel(lm.head(xs[-1]), out.logits.double()) <= unit_roundoff(torch.float32)


def test_hidden_state_convention_is_read_from_the_model():
    """Mamba records layer outputs, Nemotron-H layer inputs, Mamba-2 layer outputs up to
    transformers 5.24 and layer inputs from 5.25 (its forward records through ``capture_outputs``);
    the convention read off the first entry is each of these."""
    from packaging.version import Version
    import transformers

    mamba2_offset = 0 if Version(transformers.__version__) >= Version("5.25.0.dev0") else 1
    for make, offset in [(SSM_LMS["mamba"], 1), (SSM_LMS["nemotron_h"], 0), (SSM_LMS["mamba2"], mamba2_offset)]:
        model = make()
        lm = adapt_causal_lm(model)
        ids = _ids()
        xs = lm.stack.block_inputs(lm.embed(ids))
        assert layer_offset(model(ids, output_hidden_states=True, use_cache=False).hidden_states, xs) == offset


def test_nemotron_h_block_kinds_and_moe_block_is_a_typed_error():
    """Mamba-2, MLP and attention blocks are wrapped; a mixture-of-experts block (no reader for
    its router) fails with a typed error naming the block kind."""
    model = nemotron_h.tiny_nemotron_h()
    assert [b.kind for b in adapt_causal_lm(model).stack.blocks] == ["linear_attention", "mlp", "full_attention",
                                                                     "mlp"]
    model.model.layers[1].block_type = "moe"
    with pytest.raises(UnsupportedModelError, match="'moe'"):
        adapt_causal_lm(model)


def test_model_type_that_does_not_fit_is_a_typed_error():
    """RWKV's channel mixing reads a token shift: adapting it says why it does not fit."""
    from transformers import RwkvConfig, RwkvForCausalLM

    model = RwkvForCausalLM(RwkvConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
                                       intermediate_size=32, context_length=16))
    with pytest.raises(UnsupportedModelError, match="rwkv.*token shift"):
        adapt_causal_lm(model)


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
    (hybrid.tiny_lfm2, [("recurrent", "SiluGated"), ("attention", "SiluGated"), ("recurrent", "SiluGated")]),
    (hybrid.tiny_falcon_h1, [("attention", "ScaledGated")] * 2),  # Mamba-2 and attention side by side
], ids=["jamba", "bamba", "qwen3_next", "lfm2", "falcon_h1"])
def test_whole_hybrid_model_matches_transformers(make, kinds):
    """Every mixer kind and feed-forward kind of the tiny config is exercised; each layer's
    input and the logits equal the unmodified model's."""
    model = make()
    lm = adapt_causal_lm(model)
    assert [(b.kind, type(b.reader).__name__) for b in lm.stack.blocks] == kinds
    assert_matches_transformers(model, lm)


@pytest.mark.parametrize("causal", [True, False], ids=["decoder", "encoder"])
def test_bert_matches_transformers(causal):
    model = tiny_causal_lm("bert", is_decoder=causal)
    stack = adapt_causal_lm(model).stack
    assert all(b.causal == causal for b in stack.blocks)
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


@pytest.mark.parametrize("name", sorted(PARALLEL | {"cohere"}))
def test_parallel_block_update_is_bypass_only(name):
    """Parallel blocks: the network reads the token alone, so dW = 0 exactly and the whole
    effect of the context is the bypass shift."""
    stack = get_architecture(name).build()
    assert all(b.wiring == "parallel" for b in stack.blocks)
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


def test_through_model_check_works_for_hand_written_adapters():
    """The check only needs first matrices that are views of parameters and a ``layer`` whose
    output takes the bypass: a hand-written adapter (Mamba's ``out_proj`` network) works as is.
    Mamba's reference forward computes its scan partly in float32, hence the float32-level bound."""
    import transformers as tf

    from icl_verify.adapters import AdaptedLM
    from icl_verify.adapters._common import tiny_model

    config = tf.MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                            conv_kernel=3, time_step_rank=4, use_bias=True, residual_in_fp32=False,
                            initializer_range=0.2)
    model = tiny_model(tf.MambaForCausalLM, config, seed=0, dtype=torch.float64)
    base = model.backbone
    lm = AdaptedLM(model, mamba.mamba_stack(base), base.embeddings, lambda h: model.lm_head(base.norm_f(h)))
    ids = _ids()[:1]
    with torch.no_grad():
        check = through_model_check(lm, ids, stack_updates(lm.stack, lm.embed(ids)))
    assert check["logits_rel_diff"] <= 1e-6 and check["control_rel_diff"] >= 1e-2


# --- the reconstruction gate -------------------------------------------------------------------

DEEPSEEK_V3 = dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, n_group=1, topk_group=1,
                   first_k_dense_replace=0, q_lora_rank=16, kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4,
                   v_head_dim=8, head_dim=None, num_key_value_heads=4, experts_implementation="eager")
DEEPSEEK_GROUPED = dict(DEEPSEEK_V3, n_routed_experts=8, n_group=2, topk_group=1)
FLEX_OLMO = dict(num_experts=4, num_experts_per_tok=2, experts_implementation="eager")
MINIMAX_M2 = dict(num_local_experts=4, num_experts_per_tok=2, experts_implementation="eager")
QWEN2_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=40,
                 experts_implementation="eager")


@pytest.fixture
def user_registries(monkeypatch):
    """Records a test registers (as a user would, with ``register_record``) are forgotten after it."""
    from icl_verify.adapters import _registry, records

    for registry in (records.RECORDS, _registry.MODEL_ADAPTERS, _registry.ARCHITECTURES):
        monkeypatch.setattr(registry, "_records", dict(registry._records))
    monkeypatch.setattr(records, "TINY", dict(records.TINY))


PLANTED = [  # records a user could write, each describing a network other than the model's
    pytest.param(LayerRecord("deepseek_v3", MoE()), DEEPSEEK_V3, id="softmax_routing_for_sigmoid_no_shared"),
    pytest.param(LayerRecord("qwen2_moe", MoE()), QWEN2_MOE, id="shared_expert_left_out"),
    pytest.param(LayerRecord("olmo2", Gated()), {}, id="post_norm_left_out"),
    pytest.param(LayerRecord("flex_olmo", MoE()), FLEX_OLMO, id="moe_post_norm_left_out"),
    pytest.param(LayerRecord("minimax_m2", MoE(renormalize=True)), MINIMAX_M2, id="softmax_routing_for_sigmoid"),
]


@pytest.mark.parametrize("record, tiny", PLANTED)
def test_planted_wrong_record_is_refused(user_registries, record, tiny):
    """A registered record whose decomposition is another network: adapting the model, and
    building its tiny architecture, raise ReconstructionError naming the first layer that differs."""
    register_record(record, tiny=tiny, replace=True)
    model = tiny_causal_lm(record.model_type)
    with pytest.raises(ReconstructionError, match=r"the output of layer 0 differs by 0\.[1-9]"):
        adapt_causal_lm(model)
    with pytest.raises(ReconstructionError, match="layer 0"):
        get_architecture(record.model_type).build()


def test_correct_user_record_passes(user_registries):
    """FlexOlmo (post-norms around a mixture of experts, no pre-norm) registered by a user with
    the right record: the gate passes, and every layer and the logits match the model."""
    register_record(LayerRecord("flex_olmo", MoE(), **POST_NORMS), tiny=FLEX_OLMO)
    model = tiny_causal_lm("flex_olmo")
    lm = adapt_causal_lm(model)
    assert check_reconstruction(lm).ratio <= 1
    assert_matches_transformers(model, lm)


def test_gate_names_the_first_layer_that_differs():
    """Only layer 1 of a 3-layer Olmo 2 model loses its post-norm: the error names layer 1. (The
    last layer's output shows in the logits: Olmo 2 records layer inputs, then the final norm.)"""
    model = tiny_causal_lm("olmo2", num_hidden_layers=3)
    lm = adapt_causal_lm(model)
    block = lm.stack.blocks[1]
    block.record = dataclasses.replace(block.record, post_ffn_norm=None)
    rec = reconstruction(lm, probe_ids(model))
    assert rec.stages[rec.first_mismatch()] == "layer 1"
    with pytest.raises(ReconstructionError, match="the output of layer 1 differs"):
        check_reconstruction(lm)


def test_adapter_that_cannot_run_is_unsupported_not_a_traceback(user_registries):
    """A record naming a module the layer does not have fails in the adapter's forward: a typed
    error naming the model type, not an AttributeError from inside the layer."""
    register_record(LayerRecord("llama", Gated(), bypass="no_such_norm"), replace=True)
    with pytest.raises(UnsupportedModelError, match="'llama' cannot run where its model runs: AttributeError"):
        adapt_causal_lm(tiny_causal_lm("llama"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ARCHS)
def test_every_architecture_passes_the_gate(name, dtype):
    """Every registered architecture's factory gives an adapted model (so ``build`` gates it) whose
    layers and logits reproduce the model's own forward within the gate's tolerance."""
    lm = get_architecture(name).factory(seed=1, dtype=dtype)
    assert isinstance(lm, AdaptedLM)
    rec = check_reconstruction(lm)
    assert len(rec.stages) == len(lm.stack) + 1 and rec.ratio <= 1


def _biased(model):
    """``model`` with its score-correction biases drawn (they start at zero), so that a reader
    ignoring them chooses other experts."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            bias = getattr(m, "e_score_correction_bias", None)
            if isinstance(bias, torch.Tensor):
                bias.copy_(0.3 * torch.randn(bias.shape, generator=g))
    return model


def test_sigmoid_routing_is_recognised_in_the_routers_own_precision():
    """MiniMax-M2 (sigmoid routing, score-correction bias, router in the model's dtype) and
    DeepSeek-V3 (grouped sigmoid routing, scaling, ungated shared experts, router logits in float32
    whatever the model's dtype) are recognised, each router read in its own precision, and match
    in float64: the gate is tight and the identity holds."""
    from icl_verify.causal_lm import identity_errors

    model = _biased(tiny_causal_lm("minimax_m2", **MINIMAX_M2))
    lm = adapt_causal_lm(model)
    assert type(lm.stack.blocks[0].record.ffn).__name__ == "SigmoidMoE"
    assert not lm.stack.blocks[0].record.ffn.router_float32
    assert_matches_transformers(model, lm)
    model = _biased(tiny_causal_lm("deepseek_v3", **DEEPSEEK_GROUPED))
    lm = adapt_causal_lm(model)
    assert lm.stack.blocks[0].record.ffn.router_float32
    assert check_reconstruction(lm).ratio <= 0.1
    assert_matches_transformers(model, lm)
    _, ratios, _ = identity_errors(lm, _ids()[:1])
    assert float(ratios.max()) <= 1


@dataclasses.dataclass(frozen=True)
class _NoCorrectionBias(SigmoidMoE):
    """A sigmoid reader that chooses the experts by ``p`` alone, ignoring the correction bias."""

    def _router_setting(self, layer, name, default):
        return default if name == "e_score_correction_bias" else super()._router_setting(layer, name, default)


@pytest.mark.parametrize("reader, match", [
    pytest.param(SigmoidMoE(shared="shared_experts"), "within float32 rounding", id="router_in_float64"),
    pytest.param(_NoCorrectionBias(shared="shared_experts", router_float32=True), r"layer 0 differs by 0\.[0-9]",
                 id="correction_bias_left_out"),
])
def test_wrong_deepseek_router_reader_is_refused(user_registries, reader, match):
    """A user record for DeepSeek-V3 (float64) whose router computes its logits in float64 (the
    model computes them in float32: refused, the gap named as float32 rounding) or ignores the
    score-correction bias (refused: other experts chosen)."""
    register_record(LayerRecord("deepseek_v3", reader), tiny=DEEPSEEK_GROUPED, replace=True, architecture=False)
    with pytest.raises(ReconstructionError, match=match):
        adapt_causal_lm(_biased(tiny_causal_lm("deepseek_v3")))


def test_deepseek_shared_expert_left_out_is_refused(user_registries):
    """A user record for DeepSeek-V3 with the right routing but no shared experts, in float32."""
    register_record(LayerRecord("deepseek_v3", SigmoidMoE()), tiny=DEEPSEEK_V3, replace=True, architecture=False)
    with pytest.raises(ReconstructionError, match="the output of layer 0 differs by 0.*different network"):
        adapt_causal_lm(tiny_causal_lm("deepseek_v3", dtype=torch.float32))


def test_gate_on_a_model_that_overflows_is_outside_the_hypotheses():
    """A model whose own forward overflows in its dtype: NonFiniteError, not a mismatch."""
    from icl_verify.errors import NonFiniteError

    model = tiny_causal_lm("llama", dtype=torch.float16)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1e5)
    with pytest.raises(NonFiniteError, match="not finite"):
        adapt_causal_lm(model)


def test_gpt_oss_clamped_experts_and_router_bias_are_recognised():
    """gpt-oss (no record): router with a bias and a softmax over the top-k logits, experts
    stored transposed with biases, gate and up clamped at a limit the tiny pre-activations
    reach, attention sinks; the model is matched at every layer and the identity holds."""
    from icl_verify.causal_lm import identity_errors

    model = tiny_causal_lm("gpt_oss", num_local_experts=4, num_experts_per_tok=2, swiglu_limit=0.3,
                           experts_implementation="eager")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.router.bias.copy_(torch.linspace(-0.5, 0.5, 4, dtype=torch.float64))
    lm = adapt_causal_lm(model)
    assert type(lm.stack.blocks[0].record.ffn).__name__ == "ClampedMoE"
    assert_matches_transformers(model, lm)
    h = lm.stack.blocks[0].pre_activations(lm.stack.blocks[0].decompose(lm.embed(_ids())).z)
    assert bool((h[1][..., ::2] > 0.3).any())  # the gate clamp is active somewhere
    _, ratios, _ = identity_errors(lm, _ids()[:1])
    assert float(ratios.max()) <= 1


def test_hybrid_with_two_layer_classes_gets_a_wiring_per_class():
    """OLMo-Hybrid (no record): gated-DeltaNet layers are pre-norm, attention layers carry Olmo 2's
    post-norms; each class gets its own wiring and the model is matched at every layer."""
    model = tiny_causal_lm("olmo_hybrid", linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                           linear_num_value_heads=4, linear_conv_kernel_dim=3)
    lm = adapt_causal_lm(model)
    assert [b.record.post_ffn_norm for b in lm.stack.blocks] == [None, "post_feedforward_layernorm"]
    assert_matches_transformers(model, lm)


def test_llama4_scaled_expert_inputs_are_recognised():
    """Llama 4 text (no record): each expert reads z scaled by the sigmoid of its top-k router
    logit, experts stored (E, d, 2m), a shared expert; matched at every layer, identity within
    tolerance."""
    from icl_verify.causal_lm import identity_errors

    model = tiny_causal_lm("llama4_text", num_local_experts=4, num_experts_per_tok=2, interleave_moe_layer_step=1)
    lm = adapt_causal_lm(model)
    assert type(lm.stack.blocks[0].record.ffn).__name__ == "ScaledInputMoE"
    assert_matches_transformers(model, lm)
    _, ratios, _ = identity_errors(lm, _ids()[:1])
    assert float(ratios.max()) <= 1


def test_recognition_that_crashes_is_unsupported_not_a_dtype_error(monkeypatch):
    """An exception while probing the layers (here planted in the wiring search) is an
    UnsupportedModelError naming it, not a RuntimeError the command would blame on the dtype."""
    from icl_verify.adapters import recognise

    def broken(*args, **kwargs):
        raise RuntimeError("shapes cannot be multiplied")

    monkeypatch.setattr(recognise, "_wiring", broken)
    model = tiny_causal_lm("llama")
    model.config.model_type = "no_such_type"
    with pytest.raises(UnsupportedModelError, match="probing its first layers failed .RuntimeError: shapes"):
        adapt_causal_lm(model)


def test_own_forward_reader_runs_a_network_that_reads_3d_shapes_on_the_token_alone():
    """Moshi's MLP unpacks (B, T, d): the recognised reader runs it on (N, 1, .) sequences, so the
    token alone (B, d), the query-alone run and the identity at every position all work."""
    from icl_verify.causal_lm import identity_errors, query_alone_check

    model = tiny_causal_lm("moshi").requires_grad_(False)
    lm = adapt_causal_lm(model)
    ids = _ids()[:1]
    with torch.no_grad():
        _, ratios, last = identity_errors(lm, ids)
        assert float(ratios.max()) <= 1
        assert query_alone_check(lm, ids, last)["logits_rel_diff"] < 1e-12
