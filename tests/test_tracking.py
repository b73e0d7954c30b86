"""The MLflow record's parts in a real SQLite store: the logged model answers as models/model.pt does,
every model becomes a version, and the champion alias moves only to a better one of the same data."""

import dataclasses
from pathlib import Path

import importlib_metadata
import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.utils import requirements_utils

from mnist_pipeline.data.catalog import FASHION_MNIST, MNIST
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.errors import TrackingError
from mnist_pipeline.serving import inference
from mnist_pipeline.tracking import registry
from mnist_pipeline.tracking.run import training_run
from mnist_pipeline.training.model import MLP, load_checkpoint, save_checkpoint

from support.digits import exported


@pytest.fixture
def store_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)  # nothing of this store leaks into other tests


def logged_model(params, path, seed: int) -> str:
    """A checkpoint of an MLP with seed-dependent weights, logged in its own run; the model's URI."""
    torch.manual_seed(seed)
    save_checkpoint(MLP(params.model), params.model, MNIST.classes, path)
    with mlflow.start_run():
        return registry.log_model(path, exported(path), np.zeros((2, 1, 28, 28), np.float32) + 0.5)


def test_the_logged_model_gives_the_checkpoints_answers_on_real_digits(params, tiny_mnist, store_uri, tmp_path):
    uri = logged_model(params, tmp_path / "model.pt", seed=3)
    digits = load_split(tiny_mnist, train=False).head(50).images
    assert digits.abs().sum() > 0  # real images, not zeros
    answer = inference.load_pyfunc(uri).predict(digits.numpy())  # mlflow.pyfunc's, sys.path kept
    with torch.no_grad():
        expected = torch.softmax(load_checkpoint(tmp_path / "model.pt").model(digits), dim=1)
    assert np.allclose([a["probabilities"] for a in answer], expected.numpy(), atol=1e-6)
    assert [a["class"] for a in answer] == expected.argmax(1).tolist()
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs is None  # the model checks its input itself: pixels or images
    assert info.saved_input_example_info is not None  # logged with its input example


def test_logging_a_model_checks_its_requirements_without_reading_every_installed_package(
    params, store_uri, tmp_path, monkeypatch
):
    # MLflow's map of every installed distribution's files (2.5 s) is what made logging a model slow.
    read = []
    monkeypatch.setattr(importlib_metadata, "packages_distributions", lambda: read.append(True) or {})
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    uri = logged_model(params, tmp_path / "model.pt", seed=0)
    assert not read
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert [r.split("==")[0] for r in requirements] == ["torch", "numpy", "pandas", "mlflow", "pillow", "onnxruntime"]


def test_every_model_is_a_version_and_the_champion_moves_only_to_a_better_one(params, store_uri, tmp_path):
    uris = [logged_model(params, tmp_path / f"m{i}.pt", seed=i) for i in range(4)]
    outcomes = [
        registry.register("reg", uri, accuracy, "mnist")
        for uri, accuracy in zip(uris, (0.90, 0.89, 0.90, 0.95), strict=True)
    ]
    assert outcomes == [("1", True), ("2", False), ("3", False), ("4", True)]  # equal is not better
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("reg", registry.CHAMPION).version) == "4"
    assert [
        v.tags["test_accuracy"]
        for v in sorted(client.search_model_versions("name = 'reg'"), key=lambda v: int(v.version))
    ] == ["0.900000", "0.890000", "0.900000", "0.950000"]


def test_a_model_of_other_data_never_takes_the_champion(params, store_uri, tmp_path):
    fashion = dataclasses.replace(params, data=dataclasses.replace(params.data, dataset=FASHION_MNIST.name))
    first, second = (logged_model(fashion, tmp_path / f"m{i}.pt", seed=i) for i in range(2))
    assert registry.register("reg", first, 0.90, "mnist") == ("1", True)
    assert registry.register("reg", second, 0.99, "fashion-mnist") == ("2", False)


def test_a_registration_does_not_crown_itself_over_a_better_version_still_deciding(params, store_uri, tmp_path):
    # Two queued experiments register at once: the better one's version exists, its decision not yet.
    better, worse = (logged_model(params, tmp_path / f"m{i}.pt", seed=i) for i in range(2))
    client = mlflow.MlflowClient()
    client.create_registered_model("reg")
    client.create_model_version("reg", better, tags={"test_accuracy": "0.950000", "dataset": "mnist"})
    assert registry.register("reg", worse, 0.90, "mnist") == ("2", False)
    assert str(client.get_model_version_by_alias("reg", registry.CHAMPION).version) == "1"


def test_a_version_older_than_the_champion_is_never_crowned_again(params, store_uri, tmp_path):
    # An admin moved the champion off version 1 by hand: only the champion and newer versions compete.
    uris = [logged_model(params, tmp_path / f"m{i}.pt", seed=i) for i in range(3)]
    assert registry.register("reg", uris[0], 0.95, "mnist") == ("1", True)
    assert registry.register("reg", uris[1], 0.90, "mnist") == ("2", False)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("reg", registry.CHAMPION, "2")
    assert registry.register("reg", uris[2], 0.92, "mnist") == ("3", True)
    assert str(client.get_model_version_by_alias("reg", registry.CHAMPION).version) == "3"


def test_a_stale_champion_write_that_lands_last_is_corrected(params, store_uri, tmp_path, monkeypatch):
    first, mine, racing = (logged_model(params, tmp_path / f"m{i}.pt", seed=i) for i in range(3))
    assert registry.register("reg", first, 0.90, "mnist") == ("1", True)
    set_alias = mlflow.MlflowClient.set_registered_model_alias

    def racing_first(client, name, alias, version):
        # Between this registration's look and its write, a better one registers and crowns itself.
        monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", set_alias)
        client.create_model_version(name, racing, tags={"test_accuracy": "0.990000", "dataset": "mnist"})
        set_alias(client, name, alias, "3")
        set_alias(client, name, alias, version)  # then this one's stale write lands

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", racing_first)
    assert registry.register("reg", mine, 0.95, "mnist") == ("2", False)
    assert str(mlflow.MlflowClient().get_model_version_by_alias("reg", registry.CHAMPION).version) == "3"


def test_a_dataset_a_parallel_run_added_first_is_logged_on_the_second_try(params, store_uri, tmp_path, monkeypatch):
    # MLflow checks, then inserts: of two runs starting at once, the store refuses one insert (on
    # PostgreSQL: UniqueViolation on dataset_pk). Here the first try is refused that way.
    monkeypatch.chdir(tmp_path)
    log_input, refused = mlflow.log_input, []

    def refused_once(*args, **kwargs):
        if not refused:
            refused.append(True)
            raise MlflowException('duplicate key value violates unique constraint "dataset_pk"')
        return log_input(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", refused_once)
    with training_run(params, MNIST, "0123456789abcdef", "cpu", 1, "fp32") as run:
        pass
    recorded = mlflow.MlflowClient().get_run(run.run_id)
    assert recorded.info.status == "FINISHED" and refused
    assert [(d.dataset.name, d.dataset.digest) for d in recorded.inputs.dataset_inputs] == [
        ("mnist", "0123456789abcdef")
    ]


def test_a_run_that_fails_while_starting_is_marked_failed_not_left_running(params, store_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def refused(*args, **kwargs):
        raise MlflowException("the store said no")

    monkeypatch.setattr(mlflow, "log_input", refused)
    with pytest.raises(TrackingError, match="the store said no"):
        with training_run(params, MNIST, "0123456789abcdef", "cpu", 1, "fp32"):
            pass
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED"
