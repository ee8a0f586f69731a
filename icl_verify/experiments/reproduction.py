"""The reproduction behind ``icl-verify reproduce`` (:mod:`icl_verify.commands.reproduce`):
trains the models (or reloads them from ``DIR/checkpoints`` when trained with the same
configuration), draws the figures and writes PNG + CSV + JSON per figure and ``summary.json``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import figures
from .model import build_model, first_paper, second_paper
from .task import RegressionTask
from .train import TrainConfig, train_or_load

FIGURES = ("fig1", "fig2", "fig3", "positions", "blocks")
VARIANTS = {"LayerNorm on": ("preln", True), "LayerNorm off": ("noln", False)}


@dataclass(frozen=True)
class ReproductionSizes:
    """Sizes of a reproduction run (defaults: the papers'; :data:`QUICK`: a smoke run).

    Attributes:
        d, n: regression dimension and context examples.
        heads: attention heads (must divide ``d + 1``).
        p1_hidden, p1_steps, p1_lr: first paper's MLP width, Adam steps and learning rate.
        p2_depth, p2_steps, p2_lr, seeds: second paper's blocks, steps, learning rate, seeds.
        batch: fresh prompts per training step.
        eval_every: steps between validation evaluations (Fig 1, update norms).
        val_prompts: validation prompts; analysis_prompts: prompts for Figs 2, 3 and the analyses.
        finetune_lr: Fig 3's SGD learning rate.
    """

    d: int = 2
    n: int = 50
    heads: int = 3
    p1_hidden: int = 32
    p1_steps: int = 500
    p1_lr: float = 0.01
    p2_depth: int = 5
    p2_steps: int = 100
    p2_lr: float = 0.05
    seeds: int = 3
    batch: int = 128
    eval_every: int = 10
    val_prompts: int = 256
    analysis_prompts: int = 256
    finetune_lr: float = 0.01


QUICK = ReproductionSizes(n=12, p1_steps=30, p2_depth=2, p2_steps=10, seeds=1, batch=32,
                          eval_every=5, val_prompts=32, analysis_prompts=16)


class _Runner:
    """Shared state of one invocation: sizes, output folder, trained models (memoised)."""

    def __init__(self, sizes: ReproductionSizes, out: Path, seed: int, progress: bool):
        self.sizes, self.out, self.seed, self.progress = sizes, out, seed, progress
        self.ckpt = out / "checkpoints"
        self.task = RegressionTask(sizes.d, sizes.n)
        self._p2 = None

    def config(self, **extra) -> dict:
        return {"sizes": asdict(self.sizes), "seed": self.seed, **extra}

    def prompts(self, offset: int = 0):
        gen = torch.Generator().manual_seed(self.seed + 20_011 + offset)
        return self.task.sample(self.sizes.analysis_prompts, gen)

    def paper1(self):
        s = self.sizes
        cfg = first_paper(s.d, heads=s.heads, hidden=s.p1_hidden, seed=self.seed)
        tc = TrainConfig(steps=s.p1_steps, batch=s.batch, lr=s.p1_lr, eval_every=s.eval_every,
                         val_prompts=s.val_prompts, n=s.n, seed=self.seed)
        model, hist = train_or_load(self.ckpt, f"paper1_seed{self.seed}", cfg, tc,
                                    progress=self.progress)
        return model, build_model(cfg), hist, {"model": asdict(cfg), "train": asdict(tc)}

    def paper2(self):
        """``{variant: (models, initial models, histories, config)}`` over seeds."""
        if self._p2 is None:
            s, self._p2 = self.sizes, {}
            for key, (tag, ln) in VARIANTS.items():
                models, inits, hists = [], [], []
                for k in range(s.seeds):
                    seed = self.seed + k
                    cfg = second_paper(s.d, depth=s.p2_depth, layer_norm=ln, heads=s.heads,
                                       seed=seed)
                    tc = TrainConfig(steps=s.p2_steps, batch=s.batch, lr=s.p2_lr,
                                     eval_every=max(1, s.eval_every // 2),
                                     val_prompts=s.val_prompts, n=s.n, seed=seed)
                    m, h = train_or_load(self.ckpt, f"paper2_{tag}_seed{seed}", cfg, tc,
                                         progress=self.progress)
                    models.append(m), inits.append(build_model(cfg)), hists.append(h)
                self._p2[key] = (models, inits, hists,
                                 {"model": asdict(replace(cfg, seed=self.seed)),
                                  "train": asdict(replace(tc, seed=self.seed)),
                                  "seeds": [self.seed + k for k in range(s.seeds)]})
        return self._p2

    def fig1(self):
        _, _, hist, cfg = self.paper1()
        return figures.fig1([hist], self.out, title="Fig 1 (one block)", config=self.config(**cfg))

    def fig2(self):
        model, init, _, cfg = self.paper1()
        return figures.fig2(model, init, self.prompts(), self.out, title="Fig 2 (one block)",
                            config=self.config(**cfg))

    def fig3(self):
        model, _, _, cfg = self.paper1()
        return figures.fig3(model, self.prompts(), self.out, title="Fig 3 (one block)",
                            config=self.config(**cfg), lr=self.sizes.finetune_lr)

    def positions(self):
        p2 = self.paper2()
        return figures.positions({k: v[0] for k, v in p2.items()},
                                 {k: self.prompts() for k in p2}, self.out,
                                 config=self.config(**next(iter(p2.values()))[3]))

    def blocks(self):
        p2 = self.paper2()
        cfg = self.config(**next(iter(p2.values()))[3])
        summary = figures.blocks({k: v[0] for k, v in p2.items()}, {k: v[2] for k, v in p2.items()},
                                 {k: self.prompts() for k in p2}, self.out, config=cfg)
        for key, (models, inits, hists, c) in p2.items():
            tag = VARIANTS[key][0]
            title = f"{len(models[0])} blocks, {key}"
            vcfg = self.config(**c)
            summary[f"fig1[{key}]"] = figures.fig1(hists, self.out, name=f"blocks_{tag}_fig1",
                                                   title=title, config=vcfg)
            summary[f"fig2[{key}]"] = figures.fig2(models[0], inits[0], self.prompts(), self.out,
                                                   name=f"blocks_{tag}_fig2", title=title,
                                                   config=vcfg)
            summary[f"fig3[{key}]"] = figures.fig3(models[0], self.prompts(), self.out,
                                                   name=f"blocks_{tag}_fig3", title=title,
                                                   config=vcfg, lr=self.sizes.finetune_lr)
        return summary


def reproduce(names, sizes: ReproductionSizes, out: Path, *, seed: int = 0, progress: bool = False,
              log=lambda line: None) -> dict:
    """Train (or reload from ``out/checkpoints``) and draw the figures ``names`` (from
    :data:`FIGURES`) into ``out``; merge their summaries into ``out/summary.json`` and return
    them (with ``"seconds"`` per figure and in all). ``log`` gets one line per figure drawn."""
    runner = _Runner(sizes, Path(out), seed, progress)
    summary, start = {}, time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        summary[name] = getattr(runner, name)()
        summary[name]["seconds"] = time.perf_counter() - t0
        log(f"{name}: written to {out} in {summary[name]['seconds']:.1f} s")
    summary["seconds"] = time.perf_counter() - start
    path = Path(out) / "summary.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **summary}, indent=1, default=float))
    return summary
