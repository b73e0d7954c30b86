"""A tracking server that misbehaves, for real: an answer lost after the server acted, an error that
waiting does not clear, a server that never answers while the run stops, and a bad patience setting."""

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import TrackingError
from mnist_pipeline.stages import train as train_stage
from mnist_pipeline.tracking.patience import patiently
from mnist_pipeline.tracking.run import Run

from support.gateway import Gateway, tracking_server_behind_gateway
from support.projects import assert_complete_run, recorded_run_id
from support.synthetic import write_synthetic_mnist
from support.tiny import TRAIN_ARGS, write_tiny_params
from support.tools import REPO, clean_env

pytestmark = pytest.mark.slow

EPOCHS = 2


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with tracking_server_behind_gateway() as gateway:
        yield gateway


def workdir(folder: Path) -> Path:
    write_synthetic_mnist(folder / "data", 512, 256)
    write_tiny_params(folder / "params.yaml", epochs=EPOCHS, batch_size=32, lr=0.1)
    return folder


@pytest.fixture
def inside(tmp_path, monkeypatch, gateway) -> Iterator[Path]:
    """The train stage runs in this process, in its own folder, logging through the gateway."""
    monkeypatch.chdir(workdir(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", gateway.url)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    previous = mlflow.get_tracking_uri()
    gateway.faults.clear()
    yield tmp_path
    gateway.faults.clear()
    mlflow.set_tracking_uri(previous)  # the process-wide URI: no other test may inherit this server


def test_answers_lost_while_logging_and_registering_the_model_leave_one_model_and_one_version(inside, gateway, capsys):
    gateway.faults.lose.update(
        {
            "PATCH /api/2.0/mlflow/logged-models/": 1,  # the model's finalisation
            "POST /api/2.0/mlflow/model-versions/create": 1,
        }
    )
    assert train_stage.main(TRAIN_ARGS) == 0
    captured = capsys.readouterr()
    assert len(gateway.faults.lost) == 2, (gateway.faults.lost, captured.err)  # each lost once, then retried
    assert "answers again" in captured.err
    # One logged model, and exactly one registered version of it.
    assert_complete_run(MlflowClient(gateway.server_url), recorded_run_id(captured.out), EPOCHS)


@pytest.mark.parametrize(("status", "waited"), [(500, False), (502, True), (503, True), (504, True), (404, False)])
def test_only_a_server_that_is_away_is_waited_for(gateway, monkeypatch, status, waited):
    monkeypatch.setenv("MNIST_TRACKING_PATIENCE_S", "1")
    gateway.faults.clear()
    gateway.faults.fail["GET /api/2.0/mlflow/experiments/get-by-name"] = status
    started = time.monotonic()
    with pytest.raises(TrackingError) as caught:
        patiently(gateway.url, lambda: MlflowClient(gateway.url).get_experiment_by_name("any"))
    tries = len(gateway.faults.failed)
    gateway.faults.clear()
    assert (tries > 1) is waited, tries
    assert ("did not answer for 1 s" in str(caught.value)) is waited, caught.value
    assert (time.monotonic() - started >= 1) is waited


def test_a_permanent_server_error_stops_the_stage_in_seconds_with_one_line(inside, gateway, capsys, monkeypatch):
    monkeypatch.setenv("MNIST_TRACKING_PATIENCE_S", "60")  # waiting for a server that answers 500 would take all of it
    gateway.faults.fail["GET /api/2.0/mlflow/metrics/get-history"] = 500  # the run's first look at its record
    started = time.monotonic()
    assert train_stage.main(TRAIN_ARGS) == 1
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert err.startswith(f"error: MLflow tracking server {gateway.url} failed a request (HTTP 500), "), err
    assert err.count("\n") == 1 and "does not answer" not in err, err
    assert elapsed < 30, f"took {elapsed:.0f} s"
    assert gateway.faults.failed and not (inside / "models" / "model.pt").exists()
    client = MlflowClient(gateway.server_url)
    runs = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])
    assert "FAILED" in [r.info.status for r in runs] and "RUNNING" not in [r.info.status for r in runs]


class HangingUp:
    """A server that accepts each connection and closes it unanswered, counting them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            connection.close()


def test_a_stopped_run_drops_its_queued_epochs_and_stops_waiting_for_the_server():
    server = HangingUp()
    run = Run("0" * 32, "0", server.url)
    for epoch in (1, 2, 3):
        run.log_epoch({"epoch": epoch, "train_loss": 1.0})
    deadline = time.monotonic() + 30
    while server.connections < 2:  # the sender is retrying the first epoch
        assert time.monotonic() < deadline, server.connections
        time.sleep(0.05)
    run.stop()
    time.sleep(0.5)  # an attempt already on its way ends
    tried = server.connections
    time.sleep(4)  # the sender's next retries would come within 0.5 to 4 s
    assert server.connections == tried
    server.listener.close()


def test_a_bad_patience_setting_is_one_error_line_before_any_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.stages.train", *TRAIN_ARGS],
        cwd=workdir(tmp_path),
        env=clean_env(
            PYTHONPATH=str(REPO / "src"),
            MNIST_TRACKING_PATIENCE_S="ten minutes",
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr == "error: MNIST_TRACKING_PATIENCE_S='ten minutes': expected a number of seconds >= 0\n"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "models").exists()
