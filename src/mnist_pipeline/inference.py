"""The model's answer for prepared images, from a checkpoint or an MLflow model: class probabilities,
and the names of the classes (the digits for MNIST)."""

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_pipeline.errors import CheckpointError, brief
from mnist_pipeline.model import load_checkpoint

# (N, 1, 28, 28) float32 pixels in [0, 1], prepared as MNIST's, to (N, 10) class probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]


@torch.no_grad()
def probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Softmax of the model's logits; the class is the index of the largest."""
    return torch.softmax(model.eval()(torch.from_numpy(images)), dim=1).numpy()


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model (a checkpoint, by default models/model.pt) or --model-uri (an MLflow model)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="models/model.pt", help="checkpoint to use (default: %(default)s)")
    source.add_argument("--model-uri", help="an MLflow model instead, e.g. models:/mnist-mlp@champion")


def from_options(args: argparse.Namespace) -> tuple[Predictor, tuple[str, ...]]:
    """The model that add_model_options' options name."""
    return from_mlflow(args.model_uri) if args.model_uri else from_checkpoint(args.model)


def from_checkpoint(path: str | Path) -> tuple[Predictor, tuple[str, ...]]:
    model, _, classes = load_checkpoint(path)
    return partial(probabilities, model), classes


def from_mlflow(uri: str) -> tuple[Predictor, tuple[str, ...]]:
    """The model logged in MLflow at `uri` (models:/mnist-mlp@champion, runs:/..., a folder)."""
    # Imported here: MLflow takes seconds to import, and a checkpoint needs none of it. First the
    # project's MLflow settings (no progress bar, no retries against a server that is down): MLflow
    # reads some of them when it is imported.
    from mnist_pipeline.tracking import env

    env.configure()
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(env.tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise CheckpointError(f"{uri}: cannot load this MLflow model ({brief(exc)})") from None

    def predict(images: np.ndarray) -> np.ndarray:
        return np.array(model.predict(images)["probabilities"].tolist(), dtype=np.float32)

    return predict, model.unwrap_python_model().classes
