"""The one way tests shrink the repo's params.yaml: a small MLP and the train settings a test names."""

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mnist_pipeline.config import Params, from_dict
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.training import engine

from support.tools import REPO

SMALL_HIDDEN = [32, 16]
REPO_PARAMS: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(*, dataset: str = "mnist", **train: Any) -> dict[str, Any]:
    """params.yaml as a dict, with the small MLP, `dataset` and these `train` settings."""
    params = copy.deepcopy(REPO_PARAMS)
    params["data"]["dataset"] = dataset
    params["model"]["hidden"] = SMALL_HIDDEN
    params["train"].update(train)
    return params


def write_tiny_params(path: Path, *, dataset: str = "mnist", **train: Any) -> None:
    """tiny_params as a stage reads them, in a parameters file."""
    path.write_text(yaml.safe_dump(tiny_params(dataset=dataset, **train), sort_keys=False))


@pytest.fixture
def params() -> Params:
    """The repo's params, shrunk to a few fast epochs."""
    return from_dict(Params, tiny_params(lr=0.1, epochs=3, batch_size=32), source="tiny params")


def augmented(params, **strengths):
    """`params` with train.augment set: by default every distortion on."""
    every = {"rotation": 15, "scale": 0.1, "translate": 2, "shear": 10, "elastic": 1.5, "stroke": 0.5, "noise": 0.2}
    strengths = strengths or every
    return dataclasses.replace(
        params, train=dataclasses.replace(params.train, augment=dataclasses.replace(params.train.augment, **strengths))
    )


def train_in_process(
    params: Params, data_dir: Path, first_epoch: int = 1, training: engine.Training | None = None
) -> tuple[list[dict[str, float]], engine.Training]:
    """engine.fit run to its end on the CPU; returns the records and the training objects."""
    train, test = load_split(data_dir, train=True), load_split(data_dir, train=False)
    training = training or engine.Training.create(params, len(train), torch.device("cpu"))
    return list(engine.fit(training, train, test, params.train, split="test", first_epoch=first_epoch)), training


# The train stage's options, as dvc.yaml passes them, for a working folder laid out like the project.
TRAIN_ARGS = [
    "--params",
    "params.yaml",
    "--data",
    "data",
    "--model",
    "models/model.pt",
    "--onnx",
    "models/model.onnx",
    "--history",
    "metrics/history.json",
    "--card",
    "dvc.yaml",
]
