"""The model's answer for prepared images, from a checkpoint or an MLflow model: class probabilities,
the names of the classes (the digits for MNIST), and which model it is. By default the champion of
the tracking store, else the pipeline's own models/model.pt."""

import argparse
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from torch import nn

from mnist_pipeline.config import load_params
from mnist_pipeline.errors import CheckpointError, ParamsError, brief
from mnist_pipeline.files import digest, project_root, read_json
from mnist_pipeline.serving import onnx_model

# MLflow's settings (telemetry off, among others), applied by tracking/__init__ before anything here imports mlflow.
from mnist_pipeline.tracking import env
from mnist_pipeline.training.model import CNN, load_checkpoint

# (N, 1, 28, 28) float32 pixels in [0, 1], prepared as MNIST's, to (N, 10) class probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]
CHAMPION = "models:/{}@champion"  # the best registered version of tracking.registered_model (tracking.registry)
DEFAULT_MODEL = "mnist-mlp"  # its name where there is no params.yaml to say
CHECKPOINT = Path("models/model.pt")  # the pipeline's train stage writes it
EVALUATION = Path("metrics/eval.json")
RUNTIMES = ("torch", "onnx")


class Model(NamedTuple):
    predict: Predictor
    classes: tuple[str, ...]
    about: str  # which model: where from, version, kind, test accuracy
    mlflow_uri: str | None  # where MLflow loads it from; None for a checkpoint


@torch.no_grad()
def probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Softmax of the model's logits; the class is the index of the largest."""
    return torch.softmax(model.eval()(torch.from_numpy(images)), dim=1).numpy()


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model (a checkpoint) or --model-uri (an MLflow model); neither: the champion, else models/model.pt.
    --runtime onnx: the model's ONNX export on onnxruntime rather than PyTorch."""
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        metavar="RUNTIME",
        help="torch (the default): the model on PyTorch; onnx: its ONNX export on onnxruntime, the same answers",
    )
    source = parser.add_mutually_exclusive_group()
    champion = CHAMPION.format("NAME")
    source.add_argument(
        "--model",
        help=f"checkpoint to use (default: {champion}, NAME params.yaml's tracking.registered_model, when the "
        f"tracking store has one, else {CHECKPOINT})",
    )
    source.add_argument("--model-uri", help=f"an MLflow model instead, e.g. {CHAMPION.format(DEFAULT_MODEL)}")


def from_options(args: argparse.Namespace) -> Model:
    """The model that add_model_options' options name."""
    if args.model_uri:
        return from_mlflow(args.model_uri, args.runtime)
    if args.model:
        return from_checkpoint(args.model, args.runtime)
    champion = champion_uri()
    return from_mlflow(champion, args.runtime) if has_champion(champion) else from_checkpoint(CHECKPOINT, args.runtime)


def champion_uri() -> str:
    """The champion of the model that params.yaml's tracking.registered_model names (of mnist-mlp outside a project)."""
    try:
        return CHAMPION.format(load_params(project_root() / "params.yaml").tracking.registered_model)
    except ParamsError:  # no params.yaml here, or one the pipeline would refuse
        return CHAMPION.format(DEFAULT_MODEL)


def default_store_exists() -> bool:
    """Is there a tracking store to look in? MLFLOW_TRACKING_URI, or tracking.tracking_uri's default,
    mlflow.db at the project root. Asked first so that, without a store, MLflow is never imported
    (seconds)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (project_root() / "mlflow.db").exists()


def has_champion(uri: str) -> bool:
    """Does the tracking store hold the version `uri` names (models:/NAME@champion)?"""
    if not default_store_exists():
        return False
    from mlflow.exceptions import MlflowException

    try:
        _registered_version(uri)
    except MlflowException:  # no such model or alias, or a store without the registry's tables
        return False
    return True


def from_checkpoint(path: str | Path, runtime: str = "torch") -> Model:
    """The checkpoint's model; with runtime onnx, its ONNX export beside it (the train stage writes both)."""
    model, cfg, classes = load_checkpoint(path)
    accuracy = evaluated_accuracy(Path(path))
    scored = f"test accuracy {accuracy:.2%} ({EVALUATION})" if accuracy is not None else "test accuracy not known"
    if runtime == "onnx":
        exported = onnx_beside(path)
        session = onnx_model.load(exported, Path(path))
        return Model(session.probabilities, classes, f"{exported} ({cfg.kind}, onnxruntime, {scored})", None)
    return Model(partial(probabilities, model), classes, f"{path} ({cfg.kind}, {scored})", None)


def onnx_beside(checkpoint: str | Path) -> Path:
    """Where the train stage puts a checkpoint's ONNX export: models/model.pt -> models/model.onnx."""
    return Path(checkpoint).with_suffix(".onnx")


def evaluated_accuracy(path: Path) -> float | None:
    """metrics/eval.json's test accuracy when dvc.lock says the evaluate stage scored this very file
    (same md5) and wrote that very eval.json; None otherwise."""
    try:
        stage = yaml.safe_load(Path("dvc.lock").read_text())["stages"]["evaluate"]
        scored = {d["path"]: d.get("md5") for d in stage["deps"]}[str(CHECKPOINT)]
        written = {o["path"]: o.get("md5") for o in stage["outs"]}[str(EVALUATION)]
        if digest(path, "md5") != scored or digest(EVALUATION, "md5") != written:
            return None
        return float(read_json(EVALUATION)["test_accuracy"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):  # no pipeline here, or not this model's
        return None


def _registered_version(uri: str):
    """The registry's version behind models:/NAME@ALIAS or models:/NAME/VERSION; MlflowException if none."""
    from mlflow.tracking import MlflowClient

    name, _, which = uri.removeprefix("models:/").partition("@")
    client = MlflowClient(env.tracking_uri())
    if which:
        return client.get_model_version_by_alias(name, which)
    name, _, version = name.partition("/")
    return client.get_model_version(name, version)


def _describe(uri: str, model: nn.Module, runtime: str) -> str:
    from mlflow.exceptions import MlflowException

    kind = ("cnn" if isinstance(model, CNN) else "mlp") + (", onnxruntime" if runtime == "onnx" else "")
    try:
        version = _registered_version(uri) if uri.startswith("models:/") else None
    except MlflowException:  # loaded, so it exists; a store that lists no such version only says less
        version = None
    if version is None:
        return f"{uri} ({kind}, test accuracy not known)"
    accuracy = version.tags.get("test_accuracy")
    scored = f"test accuracy {float(accuracy):.2%}" if accuracy else "test accuracy not known"
    return f"{uri} (version {version.version}, {kind}, {scored})"


def on_runtime(model: Any, runtime: str, uri: str) -> Any:
    """The MLflow model's served_model.DigitClassifier (`model`: loaded by mlflow.pyfunc), answering on
    `runtime`."""
    served = model.unwrap_python_model()
    if runtime != "torch":
        if not hasattr(served, "use"):  # its served_model.py predates ONNX exports
            raise CheckpointError(f"{uri}: logged without an ONNX export (before they existed); use --runtime torch")
        served.use(runtime)
    return served


def load_pyfunc(uri: str) -> Any:
    """mlflow.pyfunc.load_model(uri), leaving sys.path as it was. MLflow puts the model's copy of the
    package first on sys.path, for good: this process runs the package it imported already, but a
    process it spawns later (DDP, a worker) would import that copy."""
    import mlflow.pyfunc

    path = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        sys.path[:] = path


def from_mlflow(uri: str, runtime: str = "torch") -> Model:
    """The model logged in MLflow at `uri` (models:/NAME@champion, runs:/..., a folder), on `runtime`: a
    model logged before ONNX exports has only torch."""
    # Imported here: MLflow takes seconds to import, and a checkpoint needs none of it.
    import mlflow
    import pandas as pd  # with MLflow, which imports it anyway
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(env.tracking_uri())
    try:
        model = load_pyfunc(uri)
    except (MlflowException, OSError) as exc:
        raise CheckpointError(f"{uri}: cannot load this MLflow model ({brief(exc)})") from None
    served = on_runtime(model, runtime, uri)

    def predict(images: np.ndarray) -> np.ndarray:
        # Records (a list of dicts), or a DataFrame from a model logged before 2026-12-03: both the same table.
        return np.array(pd.DataFrame(model.predict(images))["probabilities"].tolist(), dtype=np.float32)

    return Model(predict, served.classes, _describe(uri, served.model, runtime), uri)
