"""``icl-verify llm --model DIR`` on tiny random checkpoints of every supported model type
(saved with ``save_pretrained``, with a character tokenizer built offline), including the check
through the model's own forward (``--through-model``)."""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("transformers", reason="the LLM analysis needs the optional extra: pip install '.[models]'")

from icl_verify.adapters import list_records, tiny_causal_lm  # noqa: E402
from icl_verify.cli import main  # noqa: E402

CHARS = "?abcdefghijklmnopqrstuvwxyz ->\n"
#: the default run (every type is checked through its own forward in test_adapters); ICL_VERIFY_ALL_MODELS=1 runs every record
FAMILIES = ["gpt2", "mixtral"]  # Conv1D views and absolute positions; fused experts
TYPES = list_records() if os.getenv("ICL_VERIFY_ALL_MODELS") else FAMILIES


def save_char_tokenizer(directory) -> None:
    """A one-character-per-token tokenizer (unknown characters: ``?``) saved in ``directory``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(CHARS)}, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="?").save_pretrained(directory)


@pytest.mark.parametrize("model_type", TYPES)
def test_llm_command_on_saved_checkpoint(model_type, tmp_path, capsys):
    run_llm_on_checkpoint(tiny_causal_lm(model_type, dtype=torch.float32), tmp_path, capsys)


def run_llm_on_checkpoint(model, tmp_path, capsys, *options: str) -> None:
    """Save ``model`` with a character tokenizer; ``icl-verify llm --model DIR`` (in float64 unless
    ``options`` say otherwise) with ``--through-model`` succeeds and reports the check through the
    model's own forward."""
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    save_char_tokenizer(model_dir)
    code = main(["llm", "--model", str(model_dir), "--task", "antonyms", "--shots", "1", "--dtype",
                 "float64", "--through-model", "--no-progress", "--out", str(tmp_path / "out"), *options])
    out = capsys.readouterr().out
    assert "through the model's own forward" in out
    assert code == 0, out


def _recurrent_and_hybrid():
    from icl_verify.adapters import hybrid, nemotron_h, recurrent_gemma
    from icl_verify.adapters import mamba2_blocks as mamba2

    return {"mamba2": mamba2.tiny_mamba2_lm, "recurrent_gemma": recurrent_gemma.tiny_recurrent_gemma_lm,
            "jamba": hybrid.tiny_jamba, "nemotron_h": nemotron_h.tiny_nemotron_h}


#: a state-space and a hybrid (with experts) family in the default run; all four with ICL_VERIFY_ALL_MODELS=1
RECURRENT_TYPES = (["mamba2", "recurrent_gemma", "jamba", "nemotron_h"] if os.getenv("ICL_VERIFY_ALL_MODELS")
                   else ["mamba2", "jamba"])


@pytest.mark.parametrize("model_type", RECURRENT_TYPES)
def test_llm_command_on_recurrent_and_hybrid_checkpoints(model_type, tmp_path, capsys):
    """One checkpoint per recurrent/hybrid adapter family (Mamba, RecurrentGemma, hybrid records
    with experts, Nemotron-H), saved in float32 and analysed in float64."""
    run_llm_on_checkpoint(_recurrent_and_hybrid()[model_type](dtype=torch.float32), tmp_path, capsys)


#: types with no record, read through the record recognised from their module tree
RECOGNISED = {"opt": {}, "roberta": {}, "minimax_m2": dict(num_local_experts=4, num_experts_per_tok=2)}


@pytest.mark.parametrize("model_type", RECOGNISED)
def test_llm_command_on_recognised_checkpoints(model_type, tmp_path, capsys):
    """Checkpoints of types without a record (OPT's dense children, RoBERTa's head module,
    MiniMax-M2's sigmoid routing): accepted from config.json, recognised after loading, gated,
    and checked through the model's own forward too."""
    run_llm_on_checkpoint(tiny_causal_lm(model_type, dtype=torch.float32, **RECOGNISED[model_type]), tmp_path, capsys)
