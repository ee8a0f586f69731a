"""The records of every supported transformers model type (5.x layouts), one line each, with
the settings of its tiny random configuration (width 32, 2 layers; see
:func:`~icl_verify.adapters.records.tiny_causal_lm`).

Adding a llama-like model type is one :func:`register_record` call here (or in user code).
"""
from __future__ import annotations

from .ffn import FusedGated, Gated, Plain
from .moe import MoE
from .records import LayerRecord, register_record

GATED = Gated()
UP_DOWN = Plain("mlp.up_proj", "mlp.act_fn", "mlp.down_proj")
SANDWICH = dict(bypass="pre_feedforward_layernorm", post_ffn_norm="post_feedforward_layernorm")
POST_NORMS = dict(bypass=None, post_ffn_norm="post_feedforward_layernorm")  # Olmo 2: no pre-norm
GPT = dict(layers="transformer.h", final_norm="transformer.ln_f", rotary="transformer.rotary_emb")
SLIDING = dict(sliding_window=4)
EAGER_EXPERTS = dict(experts_implementation="eager")  # float64 needs the loop over experts

# model type -> (record fields, tiny config settings, tags)
_LLAMA_LIKE = {
    "llama": ({}, dict(mlp_bias=True, attention_bias=True), ()),
    "mistral": ({}, SLIDING, ("sliding_window",)),
    "ministral": ({}, SLIDING, ("sliding_window",)),
    "qwen2": ({}, dict(attention_bias=True), ()),
    "qwen3": ({}, {}, ()),
    "gemma": ({}, {}, ()),
    "gemma2": (SANDWICH, dict(SLIDING, query_pre_attn_scalar=8, attn_logit_softcapping=20.0,
                              final_logit_softcapping=10.0), ("sandwich", "sliding_window")),
    "gemma3_text": (SANDWICH, dict(SLIDING, query_pre_attn_scalar=8, final_logit_softcapping=10.0,
                                   layer_types=["sliding_attention", "full_attention"]),
                    ("sandwich", "sliding_window")),
    "olmo": ({}, {}, ()),
    "olmo2": (POST_NORMS, {}, ("post_norms",)),
    "olmo3": (POST_NORMS, SLIDING, ("post_norms", "sliding_window")),
    "exaone4": (POST_NORMS, {}, ("post_norms",)),
    "granite": (dict(ffn_multiplier="residual_multiplier"), dict(residual_multiplier=0.5, embedding_multiplier=2.0, logits_scaling=3.0), ()),
    "helium": ({}, {}, ()),
    "smollm3": ({}, {}, ()),
    "seed_oss": ({}, {}, ()),
    "stablelm": ({}, {}, ()),
    "hunyuan_v1_dense": ({}, {}, ()),
    "ernie4_5": ({}, {}, ()),
    "cwm": ({}, {}, ()),
    "diffllama": ({}, {}, ("differential_attention",)),
    "exaone": ({}, {}, ()),
    "internlm3": ({}, {}, ()),
    "iquestcoder": ({}, {}, ()),
    "ministral3": ({}, {}, ()),
    "doge": ({}, {}, ()),
    "granite_swa": (dict(ffn_multiplier="residual_multiplier"),
                    dict(SLIDING, residual_multiplier=0.5, embedding_multiplier=2.0, logits_scaling=3.0),
                    ("sliding_window",)),
    "vaultgemma": (dict(bypass="pre_feedforward_layernorm"), {}, ()),
}
_OTHER_FFN = {
    "phi3": (dict(ffn=FusedGated()), {}, ("fused_gate_up",)),
    "glm": (dict(ffn=FusedGated()), {}, ("fused_gate_up",)),
    "glm4": (dict(ffn=FusedGated(), post_ffn_norm="post_mlp_layernorm"), {}, ("fused_gate_up", "sandwich")),
    "starcoder2": (dict(ffn=Plain("mlp.c_fc", "mlp.act", "mlp.c_proj")), {}, ()),
    "arcee": (dict(ffn=UP_DOWN), {}, ()),
    "jais2": (dict(ffn=UP_DOWN), {}, ()),
    "nemotron": (dict(ffn=UP_DOWN), {}, ()),
    "apertus": (dict(ffn=UP_DOWN, bypass="feedforward_layernorm"), {}, ()),
    "gpt2": (dict(ffn=Plain("mlp.c_fc", "mlp.act", "mlp.c_proj"), bypass="ln_2", layers="transformer.h",
                  final_norm="transformer.ln_f", rotary=None), dict(head_dim=None, num_key_value_heads=None),
             ("pre_ln", "absolute_positions")),
}
_PARALLEL = {
    "gpt_neox": (dict(ffn=Plain("mlp.dense_h_to_4h", "mlp.act", "mlp.dense_4h_to_h"), attention="attention",
                      parallel_flag="use_parallel_residual", layers="gpt_neox.layers",
                      final_norm="gpt_neox.final_layer_norm", rotary="gpt_neox.rotary_emb"),
                 dict(head_dim=None, num_key_value_heads=None), ("pre_ln",)),
    "gptj": (dict(ffn=Plain("mlp.fc_in", "mlp.act", "mlp.fc_out"), attention="attn", **GPT),
             dict(rotary_dim=4), ("pre_ln",)),
    "codegen": (dict(ffn=Plain("mlp.fc_in", "mlp.act", "mlp.fc_out"), attention="attn", **GPT),
                dict(rotary_dim=4), ("pre_ln",)),
    "phi": (dict(ffn=Plain("mlp.fc1", "mlp.activation_fn", "mlp.fc2"), final_norm="model.final_layernorm"),
            {}, ("pre_ln",)),
    "falcon": (dict(ffn=Plain("mlp.dense_h_to_4h", "mlp.act", "mlp.dense_4h_to_h"), attention="self_attention",
                    **GPT), dict(head_dim=None), ("pre_ln",)),
    "cohere": (dict(ffn=GATED), dict(logit_scale=0.5), ("pre_ln",)),
    "cohere2": (dict(ffn=GATED), dict(SLIDING, logit_scale=0.5), ("pre_ln", "sliding_window")),
}
_EXPERTS = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, **EAGER_EXPERTS)
_MOE = {
    "mixtral": (dict(ffn=MoE(renormalize=True, cast_back=False)),
                dict(num_local_experts=4, num_experts_per_tok=2, **EAGER_EXPERTS), ()),
    "olmoe": (dict(ffn=MoE()), _EXPERTS, ()),
    "qwen2_moe": (dict(ffn=MoE(shared="shared_expert", shared_gate="shared_expert_gate")),
                  dict(_EXPERTS, shared_expert_intermediate_size=40), ("shared_expert",)),
    "qwen3_moe": (dict(ffn=MoE()), _EXPERTS, ()),
}
_BERT = dict(ffn=Plain("intermediate.dense", "intermediate.intermediate_act_fn", "output.dense"), wiring="post",
             bypass=None, post_ffn_norm="output.LayerNorm", layers="bert.encoder.layer",
             final_norm="cls.predictions.transform", rotary=None, causal_flag="is_decoder")

for _name, (_fields, _tiny, _tags) in _LLAMA_LIKE.items():
    register_record(LayerRecord(_name, GATED, **_fields), tiny=_tiny,
                    tags=("attention", "pre_rms", "gated", "rotary") + _tags)
for _name, (_fields, _tiny, _tags) in _OTHER_FFN.items():
    register_record(LayerRecord(_name, **_fields), tiny=_tiny, tags=("attention",) + _tags)
for _name, (_fields, _tiny, _tags) in _PARALLEL.items():
    register_record(LayerRecord(_name, wiring="parallel", **_fields), tiny=_tiny,
                    tags=("attention", "parallel", "rotary") + _tags)
for _name, (_fields, _tiny, _tags) in _MOE.items():
    register_record(LayerRecord(_name, **_fields), tiny=_tiny, tags=("attention", "pre_rms", "moe", "rotary") + _tags)
register_record(LayerRecord("bert", **_BERT), tiny=dict(is_decoder=True, head_dim=None, num_key_value_heads=None,
                                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                tags=("attention", "post_ln", "absolute_positions"))
