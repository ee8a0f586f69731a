"""In-context linear regression: the task, the model (core blocks), training, the papers'
figures and their reproduction (run by the ``icl-verify reproduce`` command)."""
from .model import ModelConfig, build_model, first_paper, implicit_predict, predict, second_paper
from .task import Prompts, RegressionTask
from .train import TrainConfig, load_checkpoint, save_checkpoint, train, train_or_load

__all__ = [
    "ModelConfig", "build_model", "first_paper", "implicit_predict", "predict", "second_paper",
    "Prompts", "RegressionTask",
    "TrainConfig", "load_checkpoint", "save_checkpoint", "train", "train_or_load",
]
