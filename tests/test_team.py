"""The pipeline against the team server: refusals before training, two queued experiments at once, and a
server that dies and comes back in the middle of training."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from support.projects import EPOCHS, assert_complete_run, make_project, recorded_run_id, write_defaults
from support.synthetic import write_synthetic_mnist
from support.team_server import server_cli
from support.tiny import TRAIN_ARGS, write_tiny_params
from support.tools import REPO, clean_env, run_queue, sh

pytestmark = pytest.mark.slow


def train(workdir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_pipeline.stages.train", *TRAIN_ARGS],
        cwd=workdir,
        env=clean_env(PYTHONPATH=str(REPO / "src"), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def workdir(folder: Path, experiment: str = "mnist-mlp", **train_settings) -> Path:
    write_synthetic_mnist(folder / "data", 512, 256)
    write_tiny_params(folder / "params.yaml", **{"epochs": EPOCHS, "batch_size": 32, "lr": 0.1, **train_settings})
    text = (folder / "params.yaml").read_text().replace("experiment: mnist-mlp", f"experiment: {experiment}")
    (folder / "params.yaml").write_text(text)
    return folder


def client_of(server, user: str, password: str, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return MlflowClient(server.url)


def test_a_user_without_edit_is_refused_in_one_line_before_any_training(team_server, tmp_path):
    team_server.add_user("admin-made", "EDIT")  # the experiment exists (grant creates it)
    password = team_server.add_user("reader")  # default permission: READ
    proc = train(workdir(tmp_path), team_server.client_env("reader", password))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err == (
        f"error: MLflow tracking server {team_server.url}: user 'reader' lacks the EDIT permission on "
        f"experiment 'mnist-mlp' (HTTP 403), so it cannot log runs there; an admin can grant it: "
        f"python -m mnist_pipeline.server grant reader mnist-mlp EDIT --model mnist-mlp\n"
    )
    assert "epoch:" not in out and not (tmp_path / "models").exists()
    assert password not in out + err


def test_a_wrong_password_is_refused_in_one_line(team_server, tmp_path):
    team_server.add_user("mallory", "EDIT")
    proc = train(workdir(tmp_path), team_server.client_env("mallory", "not-her-password"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err == (
        f"error: MLflow tracking server {team_server.url} refused user 'mallory' (HTTP 401): set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server\n"
    )
    assert "not-her-password" not in out + err


def test_two_queued_experiments_at_once_both_land_complete(team_server, tmp_path, monkeypatch):
    # A new experiment: the two runs race to create it on the server.
    password = team_server.add_user("quinn")
    root = make_project(tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    write_defaults(root, {**params, "tracking": {"experiment": "queued", "registered_model": "queued"}})
    sh("git", "commit", "-qam", "own experiment", cwd=root)
    env = clean_env(**team_server.client_env("quinn", password))
    lrs = ("0.05", "0.2")
    for lr in lrs:
        sh("dvc", "exp", "run", "--queue", "-n", f"lr-{lr}", "-S", f"train.lr={lr}", cwd=root, env=env)
    run_queue(root, 2, env)

    client = client_of(team_server, "quinn", password, monkeypatch)
    experiment = client.get_experiment_by_name("queued")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["dvc_experiment"] for r in runs) == sorted(f"lr-{lr}" for lr in lrs)
    for run in runs:
        assert_complete_run(client, run.info.run_id, EPOCHS, model_name="queued")
        # MLflow's system metrics, sampled each second, for the run page's "System metrics" charts.
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert client.search_runs(["0"]) == []  # none fell back to the Default experiment
    # They registered at once, and the champion is still the best of them.
    accuracies = [float(v.tags["test_accuracy"]) for v in client.search_model_versions("name = 'queued'")]
    champion = client.get_model_version_by_alias("queued", "champion")
    assert len(accuracies) == 2 and float(champion.tags["test_accuracy"]) == max(accuracies)


def test_a_server_killed_and_restarted_mid_training_loses_nothing(team_server, tmp_path, monkeypatch):
    password = team_server.add_user("rita", "EDIT", "restarts", model="restarts")
    folder = workdir(tmp_path, experiment="restarts", epochs=6, batch_size=4)
    text = (folder / "params.yaml").read_text().replace("registered_model: mnist-mlp", "registered_model: restarts")
    (folder / "params.yaml").write_text(text)
    proc = train(folder, team_server.client_env("rita", password))
    assert f"train: runs at {team_server.url}/#/experiments/" in proc.stdout.readline()
    for line in proc.stdout:
        if line.startswith("epoch: 1,"):
            break
    pid = json.loads((team_server.state / "server.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)  # the tracking server dies; PostgreSQL keeps the data
    server_cli("start", env=team_server.env)  # and comes back on the same port, as an admin would do
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert f"tracking: {team_server.url} does not answer" in err and "answers again" in err
    client = client_of(team_server, "rita", password, monkeypatch)
    run = assert_complete_run(client, recorded_run_id(out), 6, model_name="restarts")
    # Proxied artifacts: the run's files and the model went to the server's folder, none stayed here.
    stored = team_server.state / "artifacts" / run.info.experiment_id
    assert list((stored / run.info.run_id / "artifacts").rglob("eval.json"))
    assert list((stored / "models").glob("*/artifacts/MLmodel"))
    assert not (folder / "mlruns").exists() and not (folder / "mlartifacts").exists()
    # The password reached no param, tag, output or file of the project.
    assert password not in json.dumps([run.data.params, run.data.tags]) + out + err
    assert not [p for p in folder.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
