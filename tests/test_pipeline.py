"""End to end: the real `dvc repro` in a fresh git repo on tiny synthetic data, and its MLflow run."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from mnist_pipeline.config import dotted
from mnist_pipeline.evaluation.robustness import DISTORTIONS
from mnist_pipeline.serving import onnx_model

from support.projects import EPOCHS, N_TEST, assert_complete_run, project_runs, recorded_run_id, store
from support.tools import clean_env, sh

pytestmark = pytest.mark.slow


def test_repro_writes_every_output(project):
    root, repro = project
    assert f"epoch: {EPOCHS}, train loss:" in repro.stdout
    history = json.loads((root / "metrics/history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert set(history[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert all(0 <= r["test_accuracy"] <= 1 for r in history)

    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert list(evaluation) == ["test_accuracy", "test_loss", "test_robust_mean", "test_robust_worst"]
    assert evaluation["test_accuracy"] == pytest.approx(history[-1]["test_accuracy"], abs=1e-6)
    assert evaluation["test_loss"] == pytest.approx(history[-1]["test_loss"], abs=1e-5)
    per_class = json.loads((root / "metrics/per_class.json").read_text())
    assert [row["class"] for row in per_class] == [str(c) for c in range(10)]
    assert all(set(row) == {"class", "precision", "recall"} for row in per_class)
    with open(root / "metrics/predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_TEST and set(rows[0]) == {"actual", "predicted"}

    robust = json.loads((root / "metrics/robustness.json").read_text())
    assert [row["distortion"] for row in robust] == sorted(DISTORTIONS)
    accuracy = [row["accuracy"] for row in robust]
    assert all(0 <= a <= 1 for a in accuracy)
    assert evaluation["test_robust_worst"] == min(accuracy)
    assert evaluation["test_robust_mean"] == pytest.approx(sum(accuracy) / len(accuracy), abs=1e-6)

    for name in ("loss", "accuracy", "samples", "confusion", "robustness"):
        assert (root / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"conf", "download", "train", "evaluate", "plot"}


def run_stage(root, name: str, **options) -> str:
    """A stage run by hand, as dvc.yaml runs it; its output."""
    args = [f"--{option.replace('_', '-')}={value}" for option, value in options.items()]
    return sh("python", "-m", f"mnist_pipeline.stages.{name}", *args, cwd=root, env=clean_env(PYTHONPATH="src")).stdout


def test_evaluate_and_plot_take_the_train_stages_files_the_very_ones_they_compute(project, tmp_path):
    root, repro = project
    assert "(as the train stage computed them)" in repro.stdout and "(as the train stage drew them)" in repro.stdout
    # Without what train left them, the two stages compute their files themselves: the same bytes.
    shutil.rmtree(root / "models" / "model.pt.handover")
    given = {"data": "data/mnist", "model": "models/model.pt"}
    files = {
        "metrics": "eval.json",
        "per_class": "per_class.json",
        "robustness": "robustness.json",
        "predictions": "predictions.csv",
    }
    assert "(computed)" in run_stage(root, "evaluate", **given, **{k: tmp_path / v for k, v in files.items()})
    for name in files.values():
        assert (tmp_path / name).read_bytes() == (root / "metrics" / name).read_bytes(), name
    metrics = {k: f"metrics/{files[k]}" for k in ("metrics", "robustness", "predictions")}
    drawn_by = run_stage(root, "plot", **given, **metrics, history="metrics/history.json", out=tmp_path / "plots")
    assert "(drawn)" in drawn_by
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "plots").iterdir()}
    assert drawn == {p.name: p.read_bytes() for p in (root / "plots").iterdir()} and len(drawn) == 5


def test_dvc_reads_metrics_and_plots_without_arguments(project):
    root, _ = project
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=root).stdout)
    assert list(shown[""]["data"]) == ["metrics/eval.json"]
    table = sh("dvc", "metrics", "show", cwd=root).stdout.splitlines()
    # The headline first, and no more than 8 columns of metrics (Path is the first column).
    assert table[0].split() == ["Path", "test_accuracy", "test_loss", "test_robust_mean", "test_robust_worst"]
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=root).stdout)["data"]
    assert set(plots) == {"Loss", "Accuracy", "Confusion", "Robustness", "Precision", "Recall", "plots/samples.png"}
    (robust,) = plots["Robustness"]
    assert {row["distortion"] for row in robust["content"]["data"]["values"]} == set(DISTORTIONS)
    for name in ("Precision", "Recall"):
        (bars,) = plots[name]
        assert [row["class"] for row in bars["content"]["data"]["values"]] == [str(c) for c in range(10)]


def test_the_run_holds_the_whole_record(project):
    root, repro = project
    client = store(root)
    run = assert_complete_run(client, recorded_run_id(repro.stdout), EPOCHS)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "mnist-mlp"
    # The commit the run was made at: make_project's last ("data"), whatever was committed since.
    made_at = sh("git", "log", "--format=%H", "--grep=^data$", cwd=root).stdout.strip()
    assert run.data.tags["git_commit"] == made_at
    assert run.info.run_name == f"{made_at[:7]} lr=0.1 bs=32 ep={EPOCHS} sgd"
    assert (run.data.tags["torch_threads"], run.data.tags["world_size"], run.data.tags["device"]) == ("1", "1", "cpu")

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert run.data.params == {key: str(value) for key, value in dotted(params).items()}  # every value of params.yaml

    history = json.loads((root / "metrics/history.json").read_text())
    for metric in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        points = client.get_metric_history(run.info.run_id, metric)
        assert [p.value for p in points] == pytest.approx([r[metric] for r in history], abs=1e-6)
    # The record's evaluation is metrics/'s JSON files, byte for byte, though train wrote it before evaluate ran.
    for name in ("eval", "per_class", "robustness"):
        logged = client.download_artifacts(run.info.run_id, f"metrics/{name}.json", str(root / "downloaded"))
        assert open(logged, "rb").read() == (root / f"metrics/{name}.json").read_bytes()
    assert not [name for name in run.data.metrics if name.startswith("robustness")]  # charts before the curves
    for name in ("loss", "samples", "robustness"):
        logged = client.download_artifacts(run.info.run_id, f"plots/{name}.png", str(root / "downloaded"))
        assert open(logged, "rb").read() == (root / "plots" / f"{name}.png").read_bytes()
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "mnist" and len(dataset_input.dataset.digest) == 16


def test_the_onnx_export_is_a_dvc_output_and_beside_the_model_in_the_record(project):
    root, repro = project
    outs = [out["path"] for out in yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]["outs"]]
    assert "models/model.onnx" in outs
    session = onnx_model.load(root / "models/model.onnx", root / "models/model.pt")  # exported from that very file
    assert session.about.kind == "mlp"
    client = store(root)
    (version,) = client.search_model_versions(f"name = 'mnist-mlp' and run_id = '{recorded_run_id(repro.stdout)}'")
    location = client.get_logged_model(version.source.removeprefix("models:/")).artifact_location
    logged = Path(location.removeprefix("file://"))  # the store's own folder: mlruns/ in the project
    assert (logged / "artifacts/model.onnx").read_bytes() == (root / "models/model.onnx").read_bytes()
    assert (logged / "artifacts/model.pt").read_bytes() == (root / "models/model.pt").read_bytes()


def test_the_model_card_reads_the_same_in_dvc_yaml_and_mlflow(project):
    root, repro = project
    entry = yaml.safe_load((root / "dvc.yaml").read_text())["artifacts"]["mnist-mlp"]
    assert (entry["path"], entry["type"], entry["labels"]) == (
        "models/model.pt",
        "model",
        ["mlp", "mnist", "pytorch", "onnx"],
    )
    text = entry["desc"]
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert text.startswith("# mnist-mlp: MLP 784-32-16-10 on mnist\n")
    assert f"**Test accuracy {evaluation['test_accuracy']:.4f}**, loss {evaluation['test_loss']:.4f}" in text
    run_id = recorded_run_id(repro.stdout)
    client = store(root)
    (version,) = client.search_model_versions(f"name = 'mnist-mlp' and run_id = '{run_id}'")
    assert version.description == text
    assert Path(client.download_artifacts(run_id, "model_card.md", str(root / "downloaded"))).read_text() == text
    # DVC's own reading of the entry: the model, with the same card.
    (artifact,) = Repo(str(root)).artifacts.read()["dvc.yaml"].values()
    assert (artifact.type, artifact.desc, artifact.labels) == ("model", text, entry["labels"])


def test_second_repro_does_nothing(project):
    root, _ = project
    runs = len(project_runs(root))
    again = sh("dvc", "repro", cwd=root)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout
    assert len(project_runs(root)) == runs


@pytest.fixture(scope="module")
def fresh_clone(project, tmp_path_factory):
    """The session's project with its run committed (metrics, dvc.lock), cloned as a newcomer does,
    then `dvc repro`. The clone has no model and no plots; its data comes from the original's DVC
    cache, as it would from a download or a remote."""
    original, _ = project
    sh("git", "add", "-A", cwd=original)
    sh("git", "commit", "-qm", "the committed run", cwd=original)  # outputs unchanged: still up to date
    clone = tmp_path_factory.mktemp("clone")
    sh("git", "clone", "-q", str(original), str(clone), cwd=clone)
    sh("dvc", "cache", "dir", "--local", str(original / ".dvc" / "cache"), cwd=clone)
    sh("dvc", "checkout", "download", cwd=clone)
    return original, clone, sh("dvc", "repro", cwd=clone)


def test_a_fresh_clone_records_the_whole_run_though_dvc_skips_evaluate(fresh_clone):
    original, clone, repro = fresh_clone
    # The situation this guards: the retrained model is byte-identical to the committed one, so
    # DVC skips evaluate, and the record must not depend on it.
    assert "Running stage 'train'" in repro.stdout
    assert "Stage 'evaluate' didn't change, skipping" in repro.stdout
    assert (clone / "metrics/eval.json").read_bytes() == (original / "metrics/eval.json").read_bytes()
    assert_complete_run(store(clone), recorded_run_id(repro.stdout), EPOCHS)
    # The model card in dvc.yaml and the ONNX export come out byte-identical too: git and DVC see no change.
    assert sh("git", "status", "--porcelain", "dvc.yaml", cwd=clone).stdout == ""
    assert (clone / "models/model.onnx").read_bytes() == (original / "models/model.onnx").read_bytes()


def test_after_a_fresh_clone_the_champion_resolves_and_predicts(fresh_clone):
    _, clone, _ = fresh_clone
    code = (
        "import mlflow, numpy as np; m = mlflow.pyfunc.load_model('models:/mnist-mlp@champion'); "
        "print(np.asarray(m.predict(np.zeros((2, 1, 28, 28), dtype=np.float32))).shape[0])"
    )
    done = sh("python", "-c", code, cwd=clone, env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{clone / 'mlflow.db'}"))
    assert done.stdout.strip() == "2"


def test_forced_repro_gives_identical_metrics_and_a_new_complete_run(fresh_clone):
    _, clone, _ = fresh_clone
    before = {p.name: p.read_bytes() for p in (clone / "metrics").iterdir()}
    forced = sh("dvc", "repro", "--force", "--downstream", "train", cwd=clone)  # download has no mirror here
    assert {p.name: p.read_bytes() for p in (clone / "metrics").iterdir()} == before
    assert_complete_run(store(clone), recorded_run_id(forced.stdout), EPOCHS)
