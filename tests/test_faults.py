"""Stages fail loudly and early, and leave nothing half-written: each case provoked for real."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.config import load_params

from conftest import REPO, train_in_process, write_synthetic_mnist

pytestmark = pytest.mark.slow

# Enough batches that an epoch takes a moment (about 0.5 s), so a signal lands inside one.
N_TRAIN, N_TEST = 2048, 256
SETTINGS = {"epochs": 4, "batch_size": 4, "lr": 0.05}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_synthetic_mnist(tmp_path / "data", N_TRAIN, N_TEST)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["hidden"] = [32, 16]
    params["train"].update(SETTINGS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def stage(name: str, workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start a stage as DVC would, in `workdir`, logging to its own SQLite store."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", **(env or {})}
    full_env.pop("DVC_ROOT", None)
    return subprocess.Popen([sys.executable, "-m", f"mnist_pipeline.stages.{name}", *args], cwd=workdir,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train(workdir: Path, env: dict | None = None) -> subprocess.Popen:
    return stage("train", workdir, "--params", "params.yaml", "--data", "data", "--model", "models/model.pt",
                 "--history", "metrics/history.json", env=env)


def wait_for_epoch(proc: subprocess.Popen, epoch: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"epoch: {epoch},"):
            time.sleep(0.1)  # into the next epoch
            return
    raise AssertionError(f"stage ended before epoch {epoch}: {proc.stderr.read()}")


def run_statuses(workdir: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    return [r.info.status for r in client.search_runs([experiment.experiment_id])]


def uninterrupted_history(workdir: Path) -> list[dict]:
    params = load_params(workdir / "params.yaml")
    records, _ = train_in_process(params, workdir / "data")
    return [{k: round(v, 6) for k, v in r.items()} for r in records]


def interrupt(workdir: Path, sig: signal.Signals) -> str:
    proc = train(workdir)
    wait_for_epoch(proc, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    return err


def test_sigterm_leaves_previous_model_and_marks_run_killed(workdir):
    previous = b"the previous good model"
    (workdir / "models").mkdir()
    (workdir / "models" / "model.pt").write_bytes(previous)
    err = interrupt(workdir, signal.SIGTERM)
    assert "interrupted (Terminated); outputs of this stage were not written" in err
    assert (workdir / "models" / "model.pt").read_bytes() == previous  # untouched, never half-written
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["model.pt", "train_state.pt"]
    assert run_statuses(workdir) == ["KILLED"]


def test_ctrl_c_then_resume_gives_the_uninterrupted_result(workdir):
    err = interrupt(workdir, signal.SIGINT)
    assert "interrupted (KeyboardInterrupt)" in err
    assert not (workdir / "models" / "model.pt").exists()
    assert run_statuses(workdir) == ["KILLED"]

    resumed = train(workdir)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resuming after epoch 1" in out and "epoch: 1," not in out
    history = json.loads((workdir / "metrics" / "history.json").read_text())
    assert history == uninterrupted_history(workdir)
    assert not (workdir / "models" / "train_state.pt").exists()
    assert run_statuses(workdir) == ["FINISHED"]  # the same run, reopened and completed


def test_killed_outright_then_resumed(workdir):
    proc = train(workdir)
    wait_for_epoch(proc, 1)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    assert not (workdir / "models" / "model.pt").exists()
    assert run_statuses(workdir) == ["RUNNING"]  # nothing can mark it; the resume below finishes it

    resumed = train(workdir)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert json.loads((workdir / "metrics" / "history.json").read_text()) == uninterrupted_history(workdir)
    assert run_statuses(workdir) == ["FINISHED"]


def test_divergence_stops_before_writing_a_model(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["lr"] = 1e6
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    proc = train(workdir)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "error: epoch 1: training loss became " in err
    assert "lower train.lr (now 1000000.0)" in err
    assert not (workdir / "models" / "model.pt").exists() and "epoch: 1," not in out
    assert run_statuses(workdir) == ["FAILED"]


def test_bad_params_stop_before_any_work(workdir):
    (workdir / "params.yaml").write_text((workdir / "params.yaml").read_text().replace("lr: 0.05", "lr: -1"))
    (workdir / "data").rename(workdir / "elsewhere")  # would fail later, if anything ran
    proc = train(workdir)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err == "error: params.yaml: train.lr = -1: must be > 0\n" and out == ""
    assert not (workdir / "mlflow.db").exists()


def test_tracking_server_down_fails_fast_before_training(workdir):
    started = time.monotonic()
    proc = train(workdir, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert err.startswith("error: MLflow tracking server http://127.0.0.1:9 is not reachable: ")
    assert "Connection refused" in err
    assert "epoch: 1," not in out and not (workdir / "models" / "model.pt").exists()
    assert elapsed < 20, f"took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "models/model.pt: file not found; run `dvc repro train` first"),
        (b"garbage", "models/model.pt: not a PyTorch checkpoint (not a zip archive)"),
    ],
)
def test_evaluate_names_a_missing_or_corrupt_model(workdir, content, message):
    if content is not None:
        (workdir / "models").mkdir()
        (workdir / "models" / "model.pt").write_bytes(content)
    proc = stage("evaluate", workdir, "--params", "params.yaml", "--data", "data", "--model", "models/model.pt",
                 "--metrics", "metrics/eval.json", "--predictions", "metrics/predictions.csv")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.startswith(f"error: {message}")
    assert not (workdir / "metrics").exists()
