"""Stages fail loudly and early, and leave nothing half-written: each case provoked for real."""

import concurrent.futures
import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mnist_pipeline.config import load_params
from mnist_pipeline.files import rounded
from mnist_pipeline.stages import evaluate as evaluate_stage
from mnist_pipeline.stages import train as train_stage

from support import at_call
from support.projects import project_runs
from support.stores import seed_store
from support.synthetic import write_synthetic_mnist
from support.tiny import TRAIN_ARGS, train_in_process, write_tiny_params
from support.tools import REPO, clean_env

pytestmark = pytest.mark.slow

# Four epochs of tiny data: the signal tests stop after the second, the resumed run trains the rest.
N_TRAIN, N_TEST = 4096, 256
SETTINGS: dict[str, Any] = {"epochs": 4, "batch_size": 4, "lr": 0.05}


def make_workdir(folder: Path) -> Path:
    write_synthetic_mnist(folder / "data", N_TRAIN, N_TEST)
    write_tiny_params(folder / "params.yaml", **SETTINGS)
    return folder


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path)


def stage(name: str, workdir: Path, *args: str, wraps: tuple[tuple[str, int, str, str], ...] = ()) -> subprocess.Popen:
    """Start a stage as DVC would, in `workdir`, logging to its own SQLite store; `wraps`: functions
    that act at their Nth call (support/at_call.py)."""
    # On the CPU, as train_in_process is, whether or not this machine has a GPU: the histories compared.
    env = clean_env(
        PYTHONPATH=str(REPO / "src"), MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}", CUDA_VISIBLE_DEVICES=""
    )
    return subprocess.Popen(
        [sys.executable, *at_call.command(f"mnist_pipeline.stages.{name}", *wraps), *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def train(workdir: Path, signal_at_epoch: tuple[int, signal.Signals] | None = None) -> subprocess.Popen:
    """The train stage; `signal_at_epoch` (N, signal): the stage sends itself the signal once epoch N
    has trained, before it is recorded (the resume state then holds epoch N-1). Sent at a chosen point,
    not when a poll from outside happens to see an epoch end: the same every run, however busy the machine."""
    wraps: tuple[tuple[str, int, str, str], ...] = ()
    if signal_at_epoch:
        epoch, sig = signal_at_epoch
        wraps = (("mnist_pipeline.tracking.run:Run.log_epoch", epoch, sig.name, "before"),)
    return stage("train", workdir, *TRAIN_ARGS, wraps=wraps)


def run_statuses(workdir: Path) -> list[str]:
    return [r.info.status for r in project_runs(workdir)]


def uninterrupted_history(workdir: Path) -> list[dict]:
    params = load_params(workdir / "params.yaml")
    records, _ = train_in_process(params, workdir / "data")
    return [rounded(r) for r in records]


@dataclasses.dataclass
class Stopped:
    workdir: Path
    returncode: int
    err: str
    statuses: list[str]  # of the MLflow runs, right after the stop
    model_written: bool


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict[str, Stopped]:
    """Three training runs, each stopped once epoch 2 has trained: by SIGTERM, by Ctrl-C, and by SIGKILL.
    They run at once, each watched by its own thread: start-up is most of their time."""

    def stop(folder: Path, sig: signal.Signals) -> Stopped:
        if sig == signal.SIGTERM:  # a previous good model, which must survive
            (folder / "models").mkdir()
            (folder / "models" / "model.pt").write_bytes(PREVIOUS)
        proc = train(folder, signal_at_epoch=(2, sig))
        _, err = proc.communicate(timeout=120)
        return Stopped(folder, proc.returncode, err, run_statuses(folder), (folder / "models" / "model.pt").exists())

    plan = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}
    folders = {name: make_workdir(tmp_path_factory.mktemp(name)) for name in plan}  # not thread-safe
    for folder in folders.values():
        seed_store(folder)
    with concurrent.futures.ThreadPoolExecutor(len(plan)) as pool:
        futures = {name: pool.submit(stop, folders[name], sig) for name, sig in plan.items()}
        return {name: future.result() for name, future in futures.items()}


PREVIOUS = b"the previous good model"


def test_sigterm_leaves_previous_model_and_marks_run_killed(interrupted):
    stopped = interrupted["sigterm"]
    assert stopped.returncode == 130, stopped.err
    assert "interrupted (Terminated); outputs of this stage were not written" in stopped.err
    models = stopped.workdir / "models"
    assert (models / "model.pt").read_bytes() == PREVIOUS  # untouched, never half-written
    assert sorted(p.name for p in models.iterdir()) == ["model.pt", "train_state.pt"]
    assert stopped.statuses == ["KILLED"]


def test_ctrl_c_leaves_no_model_and_marks_run_killed(interrupted):
    stopped = interrupted["sigint"]
    assert stopped.returncode == 130, stopped.err
    assert "interrupted (KeyboardInterrupt)" in stopped.err
    assert sorted(p.name for p in (stopped.workdir / "models").iterdir()) == ["train_state.pt"]
    assert stopped.statuses == ["KILLED"]


def test_killed_outright_then_resumed_to_the_uninterrupted_result(interrupted):
    stopped = interrupted["sigkill"]
    assert stopped.returncode == -signal.SIGKILL and not stopped.model_written  # no handler ran
    assert stopped.statuses == ["RUNNING"]  # nothing could mark it; the resumed run finishes it

    resumed = train(stopped.workdir)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resuming after epoch 1" in out  # killed before epoch 2's state was saved
    assert re.findall(r"^epoch: (\d),", out, re.MULTILINE) == ["2", "3", "4"]  # epoch 1 not rerun
    history = json.loads((stopped.workdir / "metrics" / "history.json").read_text())
    assert history == uninterrupted_history(stopped.workdir)
    assert not (stopped.workdir / "models" / "train_state.pt").exists()
    assert run_statuses(stopped.workdir) == ["FINISHED"]  # the same run, reopened and completed


@pytest.fixture
def inside(workdir, monkeypatch):
    """Run stages in this process (no start-up cost) in `workdir`, logging to its own store."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return workdir


EVALUATE_ARGS = [
    "--data",
    "data",
    "--model",
    "models/model.pt",
    "--metrics",
    "metrics/eval.json",
    "--per-class",
    "metrics/per_class.json",
    "--robustness",
    "metrics/robustness.json",
    "--predictions",
    "metrics/predictions.csv",
]


def test_divergence_stops_before_writing_a_model(inside, capsys):
    params = yaml.safe_load((inside / "params.yaml").read_text())
    params["train"].update(lr=1e6, batch_size=64)
    (inside / "params.yaml").write_text(yaml.safe_dump(params))
    assert train_stage.main(TRAIN_ARGS) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: epoch 1: training loss became ")
    assert re.search(r"became (nan|inf) at batch \d+; lower train.lr \(now 1000000.0\)\n$", captured.err)
    assert "epoch: 1," not in captured.out
    assert not (inside / "models" / "model.pt").exists() and not (inside / "metrics").exists()
    assert run_statuses(inside) == ["FAILED"]


def test_bad_params_stop_before_any_work(inside, capsys):
    (inside / "params.yaml").write_text((inside / "params.yaml").read_text().replace("lr: 0.05", "lr: -1"))
    assert train_stage.main(TRAIN_ARGS) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: params.yaml: train.lr = -1: must be > 0\n" and captured.out == ""
    assert sorted(p.name for p in inside.iterdir()) == ["data", "params.yaml"]  # no store, no outputs


def test_tracking_server_down_fails_fast_before_training(inside, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    assert train_stage.main(TRAIN_ARGS) == 1
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert captured.err.startswith("error: MLflow tracking server http://127.0.0.1:9 is not reachable: ")
    assert "Connection refused" in captured.err
    assert "epoch: 1," not in captured.out and not (inside / "models" / "model.pt").exists()
    assert elapsed < 1, f"took {elapsed:.1f} s"  # docs/failures.md: "within a second"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "models/model.pt: file not found; run `dvc repro train` first"),
        (b"garbage", "models/model.pt: not a PyTorch checkpoint (not a zip archive)"),
    ],
)
def test_evaluate_names_a_missing_or_corrupt_model(inside, capsys, content, message):
    if content is not None:
        (inside / "models").mkdir()
        (inside / "models" / "model.pt").write_bytes(content)
    assert evaluate_stage.main(EVALUATE_ARGS) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (inside / "metrics").exists()
