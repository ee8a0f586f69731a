"""A real causal language model under the implicit-update lens (docs/theory.md §7).

One module per job: :mod:`.loading` (SmolLM2 or a local model, offline), :mod:`.casting` (one
model in several dtypes, each rounded from its own values), :mod:`.offload` (weights accelerate
offloads, held loaded for a check), :mod:`.prompts`
(few-shot tasks and prompts as token ids ``(1, T)``), :mod:`.identity` (the identity at every
layer and position, the query alone through the updated layers), :mod:`.shots` (the shots curve
``dW_l(k)`` and its cosine with the shots' loss gradient), :mod:`.through_model` (the updates
written into the model's own parameters and run through its own forward), :mod:`.analysis` (all
of them at once, as ``icl-verify llm`` reports them).
"""
from .analysis import Analysis, analyse
from .casting import exact_casts
from .identity import combined_norm, identity_errors, query_alone_check
from .loading import SMOLLM2, SMOLLM2_FILE, load_model, smollm2_dir
from .prompts import TASKS, Prompt, Task, register_task, task_prompt, text_prompt
from .shots import finetune_similarity, shots_loss_gradients, shots_updates

__all__ = [
    "SMOLLM2",
    "SMOLLM2_FILE",
    "TASKS",
    "Analysis",
    "Prompt",
    "Task",
    "analyse",
    "combined_norm",
    "exact_casts",
    "finetune_similarity",
    "identity_errors",
    "load_model",
    "query_alone_check",
    "register_task",
    "shots_loss_gradients",
    "shots_updates",
    "smollm2_dir",
    "task_prompt",
    "text_prompt",
]
