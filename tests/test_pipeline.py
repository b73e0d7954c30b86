"""End to end: the real `dvc repro` in a fresh git repo on tiny synthetic data, and its MLflow run."""

import csv
import json

import pytest
import yaml

from conftest import EPOCHS, N_TEST, project_runs, sh, store

pytestmark = pytest.mark.slow


def test_repro_writes_every_output(project):
    root, repro = project
    assert f"epoch: {EPOCHS}, train loss:" in repro.stdout
    history = json.loads((root / "metrics/history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert set(history[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert all(0 <= r["test_accuracy"] <= 1 for r in history)

    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert evaluation["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=1e-6)
    assert evaluation["test_loss"] == pytest.approx(history[-1]["test_loss"], abs=1e-5)
    assert sorted(evaluation["per_class"], key=int) == [str(c) for c in range(10)]
    assert sum(map(sum, evaluation["confusion_matrix"])) == N_TEST
    with open(root / "metrics/predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_TEST and set(rows[0]) == {"actual", "predicted"}

    for name in ("loss", "accuracy", "samples", "confusion"):
        assert (root / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"download", "train", "evaluate", "plot"}


def test_dvc_reads_metrics_and_plots_without_arguments(project):
    root, _ = project
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=root).stdout)
    metrics = shown[""]["data"]["metrics/eval.json"]["data"]
    assert {"test_accuracy", "test_loss"} <= set(metrics)
    plots = sh("dvc", "plots", "show", "--json", cwd=root).stdout
    for title in ("Loss per epoch", "Accuracy per epoch", "Confusion matrix (test set)", "plots/samples.png"):
        assert title in plots


def test_one_mlflow_run_with_everything(project):
    root, _ = project
    client = store(root)
    experiment = client.get_experiment_by_name("mnist-mlp")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    head = sh("git", "rev-parse", "HEAD", cwd=root).stdout.strip()
    assert run.data.tags["git_commit"] == head
    assert run.info.run_name == f"{head[:7]} lr=0.1 bs=32 ep={EPOCHS} sgd"

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert run.data.params["train.lr"] == str(params["train"]["lr"])
    assert run.data.params["model.hidden"] == "[32, 16]"
    assert len(run.data.params) == 14  # every value of params.yaml

    history = json.loads((root / "metrics/history.json").read_text())
    for metric in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        points = client.get_metric_history(run.info.run_id, metric)
        assert [p.step for p in points] == list(range(1, EPOCHS + 1))
        assert [p.value for p in points] == pytest.approx([r[metric] for r in history], abs=1e-6)
    assert "precision_0" in run.data.metrics and "recall_9" in run.data.metrics

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {f"plots/{n}.png" for n in ("loss", "accuracy", "samples", "confusion")}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "metrics")] == ["metrics/eval.json"]


def test_logged_model_has_signature_and_predicts(project):
    import mlflow
    import numpy as np

    root, _ = project
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    version = store(root).get_model_version_by_alias("mnist-mlp", "champion")
    assert str(version.version) == "1"
    info = mlflow.models.get_model_info("models:/mnist-mlp@champion")
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 28, 28]
    model = mlflow.pyfunc.load_model("models:/mnist-mlp@champion")
    answer = model.predict(np.zeros((3, 1, 28, 28), dtype=np.float32))
    assert list(answer.columns) == ["class", "probabilities"] and len(answer) == 3  # form: tests/test_serve.py


def test_second_repro_does_nothing_and_forced_repro_is_identical(project):
    root, _ = project
    again = sh("dvc", "repro", cwd=root)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout
    before = {p.name: p.read_bytes() for p in (root / "metrics").iterdir()}
    sh("dvc", "repro", "--force", "--downstream", "train", cwd=root)  # download has no mirror here
    assert {p.name: p.read_bytes() for p in (root / "metrics").iterdir()} == before
    assert len(project_runs(root)) == 2
