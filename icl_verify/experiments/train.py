"""Seeded training on fresh prompts, with the Fig 1 quantities tracked during training, and
checkpoints (``torch.save`` of the ``state_dict`` beside a JSON of the configuration and history)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..updates import context_update, stack_updates
from .model import ModelConfig, build_model, implicit_predict, predict
from .task import Prompts, RegressionTask


@dataclass(frozen=True)
class TrainConfig:
    """Training schedule.

    Attributes:
        steps: Adam steps, each on ``batch`` fresh prompts.
        batch: prompts per step.
        lr: Adam learning rate.
        eval_every: evaluate the validation prompts every this many steps (and at 0 and the end).
        val_prompts: size of the fixed validation set.
        n: context examples per prompt.
        seed: seed of the data generator (prompts), independent of the model's init seed.
    """

    steps: int = 500
    batch: int = 128
    lr: float = 0.01
    eval_every: int = 10
    val_prompts: int = 256
    n: int = 50
    seed: int = 0


def update_norms(model, prompts: Prompts) -> torch.Tensor:
    """``||dW^l(C)||_F`` of every block for every prompt, ``(B, L)`` (the query's update; for a
    stack, block ``l`` against its own with-context input, reference = that token alone)."""
    if len(model) == 1:
        return context_update(model.blocks[0], prompts.context, prompts.query).norms()[..., :1]
    ups = stack_updates(model, prompts.tokens())
    return torch.stack([u.norms()[..., 0] for u in ups], dim=-1)


@torch.no_grad()
def evaluate(model, prompts: Prompts) -> dict:
    """Validation numbers: mean squared error of the in-context prediction (``icl_loss``) and of
    the implicit-update prediction (``implicit_loss``), their absolute difference, the largest
    per-prompt prediction difference, and the mean update norm per block."""
    icl = predict(model, prompts.tokens())
    imp = implicit_predict(model, prompts.context, prompts.query)
    icl_loss = float(((icl - prompts.target) ** 2).mean())
    imp_loss = float(((imp - prompts.target) ** 2).mean())
    return {
        "icl_loss": icl_loss,
        "implicit_loss": imp_loss,
        "loss_gap": abs(icl_loss - imp_loss),
        "max_prediction_gap": float((icl - imp).abs().max()),
        "update_norm": update_norms(model, prompts).mean(0).tolist(),
    }


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, *, progress: bool = True,
          desc: str = "train") -> tuple[torch.nn.Module, list[dict]]:
    """Train a fresh model with Adam on the squared error of its in-context prediction, fresh
    prompts every step. Returns the model and the history (one :func:`evaluate` record per
    evaluation, with ``step`` and the running ``train_loss``)."""
    task = RegressionTask(model_cfg.d, train_cfg.n)
    dtype = model_cfg.torch_dtype
    model = build_model(model_cfg)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    val = task.sample(train_cfg.val_prompts, torch.Generator().manual_seed(train_cfg.seed + 10_007),
                      dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    history = []
    train_loss = None  # no step taken yet
    bar = tqdm(range(train_cfg.steps + 1), desc=desc, disable=not progress, leave=False)
    for step in bar:
        if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
            model.eval()
            history.append({"step": step, "train_loss": train_loss, **evaluate(model, val)})
            bar.set_postfix(val=f"{history[-1]['icl_loss']:.3g}")
        if step == train_cfg.steps:
            break
        model.train()
        batch = task.sample(train_cfg.batch, gen, dtype=dtype)
        loss = ((predict(model, batch.tokens()) - batch.target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_loss = float(loss.detach())
    model.eval()
    return model, history


def save_checkpoint(directory: Path, name: str, model, model_cfg: ModelConfig,
                    train_cfg: TrainConfig, history: list[dict]) -> Path:
    """Write ``name.pt`` (the ``state_dict``) and ``name.json`` (configs and history); returns
    the JSON's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / f"{name}.pt")
    meta = {"model": asdict(model_cfg), "train": asdict(train_cfg), "history": history}
    path = directory / f"{name}.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


def load_checkpoint(directory: Path, name: str):
    """Rebuild a model saved by :func:`save_checkpoint`: ``(model, model_cfg, train_cfg, history)``."""
    directory = Path(directory)
    meta = json.loads((directory / f"{name}.json").read_text())
    model_cfg, train_cfg = ModelConfig(**meta["model"]), TrainConfig(**meta["train"])
    model = build_model(model_cfg)
    model.load_state_dict(torch.load(directory / f"{name}.pt", weights_only=True))
    model.eval()
    return model, model_cfg, train_cfg, meta["history"]


def train_or_load(directory: Path, name: str, model_cfg: ModelConfig, train_cfg: TrainConfig, *,
                  progress: bool = True):
    """Load checkpoint ``name`` from ``directory`` if it was trained with exactly these
    configurations, else train and save it: ``(model, history)``."""
    try:
        model, m, t, history = load_checkpoint(directory, name)
        if m == model_cfg and t == train_cfg:
            return model, history
    except (FileNotFoundError, json.JSONDecodeError, TypeError, RuntimeError, KeyError):
        pass
    model, history = train(model_cfg, train_cfg, progress=progress, desc=name)
    save_checkpoint(directory, name, model, model_cfg, train_cfg, history)
    return model, history
