"""The search across machines: two network namespaces joined by a veth pair, the team server (MLflow
and the studies database) on one, a worker on each; a worker killed mid-trial is retried by the other."""

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.hosts import Hosts, network_namespaces
from support.synthetic import write_synthetic_mnist
from support.team_server import needs_postgres, new_password, server_env, state_folder
from support.tools import REPO, clean_env, free_port

pytestmark = [pytest.mark.slow, needs_postgres]

STUDY = {
    "trials": 8,
    "epochs": 4,
    "validation": 500,
    "pruner": "median",
    "seed": 0,
    "params": {"model.kind": "mlp", "model.hidden": [64]},
    "space": {
        "train.lr": {"float": [0.01, 0.3], "log": True},
        "train.batch_size": {"choices": [32, 64]},
        "train.optimizer": {"choices": ["sgd", "adamw"]},
    },
}
# Read the study and its MLflow runs where the server is (its namespace): JSON on stdout.
REPORT = """
import json, sys, optuna
from mlflow.tracking import MlflowClient
study = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2])
client = MlflowClient(sys.argv[3])
experiment = client.get_experiment_by_name("mnist-mlp-search")
runs = {r.data.tags.get("sweep_trial"): r for r in client.search_runs([experiment.experiment_id],
        filter_string=f"tags.sweep_study = '{sys.argv[1]}'") if "sweep_trial" in r.data.tags}
def row(t):
    run = runs.get(str(t.number))
    return {"number": t.number, "state": t.state.name, "worker": t.user_attrs.get("worker", ""),
            "retried": t.system_attrs.get("failed_trial"), "start": t.datetime_start.timestamp(),
            "run_status": run.info.status if run else None,
            "retried_by": run.data.tags.get("sweep_retried_by") if run else None}
print(json.dumps([row(t) for t in study.get_trials()]))
"""
# Wait, where the server is, until worker argv[3] (host:pid) is training a trial (an epoch done); exit 1 after 120 s.
TRAINING = """
import sys, time, optuna
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:  # the workers may not have made the study yet
        trials = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2]).get_trials()
    except KeyError:
        trials = []
    if any(t.state.name == "RUNNING" and t.user_attrs.get("worker", "").startswith(sys.argv[3] + ":")
           and t.user_attrs.get("epochs_trained") for t in trials):
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
"""


@dataclass
class Site:
    hosts: Hosts
    env: dict[str, str]  # a worker's: the team server, the studies database, this checkout
    storage: str
    tracking: str
    folders: dict[str, Path]  # each machine's project folder

    def worker(self, host: str, study: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.hosts[host][0],
                sys.executable,
                "-m",
                "mnist_pipeline.sweep",
                "run",
                study,
                "--storage",
                self.storage,
            ],
            cwd=self.folders[host],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def on_a(self, script: str, *args: str) -> list[str]:
        """The command that runs the Python `script` with `args` on machine a (beside the database)."""
        return ["ip", "netns", "exec", self.hosts["a"][0], sys.executable, "-c", script, *args]

    def wait_training(self, study: str, worker: str) -> None:
        command = self.on_a(TRAINING, study, self.storage, worker)
        assert subprocess.run(command, env=self.env, timeout=180).returncode == 0

    def report(self, study: str) -> list[dict]:
        command = self.on_a(REPORT, study, self.storage, self.tracking)
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """Machine a runs `make server` with the studies database open on a's address; each machine has
    the project's params.yaml, sweep.yaml and training files (no test files)."""
    with network_namespaces("10.231.9") as hosts:
        address = hosts["a"][2]
        state, port, db_port, admin, db_password = (
            state_folder(),
            free_port(),
            free_port(),
            new_password(),
            new_password(),
        )
        server = {
            **server_env(state, port, admin),
            "MLFLOW_HOST": address,
            "STUDIES_HOST": address,
            "STUDIES_PORT": str(db_port),
            "STUDIES_PASSWORD": db_password,
        }
        command = ["ip", "netns", "exec", hosts["a"][0], sys.executable, "-m", "mnist_pipeline.server"]
        started = subprocess.run([*command, "start"], env=server, capture_output=True, text=True, timeout=600)
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            storage = f"postgresql+psycopg2://studies@{address}:{db_port}/studies"
            assert storage in started.stdout and db_password not in started.stdout + started.stderr
            folders = {}
            for host in hosts:
                folder = tmp_path_factory.mktemp(f"machine-{host}")
                (folder / "params.yaml").write_text((REPO / "params.yaml").read_text())
                (folder / "sweep.yaml").write_text(
                    yaml.safe_dump({"studies": {"two": STUDY, "kill": {**STUDY, "trials": 6, "epochs": 30}}})
                )
                write_synthetic_mnist(folder / "data" / "mnist", n_train=4000, n_test=8)
                for test_file in (folder / "data" / "mnist").glob("t10k-*"):
                    test_file.unlink()
                folders[host] = folder
            tracking = f"http://{address}:{port}"
            env = clean_env(
                PYTHONPATH=str(REPO / "src"),
                PGPASSWORD=db_password,
                MLFLOW_TRACKING_URI=tracking,
                MLFLOW_TRACKING_USERNAME="admin",
                MLFLOW_TRACKING_PASSWORD=admin,
                MNIST_SWEEP_HEARTBEAT_S="1",
            )
            yield Site(hosts, env, storage, tracking, folders)
        finally:
            subprocess.run([*command, "stop"], env=server, capture_output=True, timeout=120)


def test_two_machines_run_one_study_every_trial_once(site):
    workers = [site.worker(host, "two") for host in ("a", "b")]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, out + err
    trials = site.report("two")
    assert [t["number"] for t in trials] == list(range(len(trials))) and len(trials) >= 8
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in trials), trials
    assert all(t["run_status"] == "FINISHED" for t in trials), trials
    # Each machine ran and printed trials of its own, together all of them.
    printed = [{int(line.split()[1]) for line in out.splitlines() if line.startswith("trial ")} for out, _ in outputs]
    assert all(printed) and printed[0] | printed[1] == {t["number"] for t in trials} and not printed[0] & printed[1]
    assert len({t["worker"] for t in trials}) == 2


def test_a_killed_worker_s_trial_is_failed_by_heartbeat_and_retried_by_the_other(site):
    survivor = site.worker("a", "kill")
    doomed = site.worker("b", "kill")
    # `ip netns exec` runs the worker in its own process: its pid is in the trials' worker name.
    site.wait_training("kill", f"{socket.gethostname()}:{doomed.pid}")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    killed_at = time.time()
    out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, out + err
    trials = site.report("kill")
    (dead,) = [t for t in trials if t["state"] == "FAIL"]
    (retry,) = [t for t in trials if t["retried"] == dead["number"]]
    assert dead["worker"] != retry["worker"]  # the other machine's worker retried it
    assert retry["state"] in ("COMPLETE", "PRUNED")
    assert retry["start"] - killed_at < 30  # the grace period is 3 s here
    assert dead["run_status"] == "FAILED" and dead["retried_by"] == str(retry["number"])
    assert all(t["run_status"] != "RUNNING" for t in trials), trials


def test_a_wrong_password_for_the_studies_database_is_one_error_line(site):
    worker = site.worker("b", "two", PGPASSWORD="not-the-password")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 1
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(err.strip().splitlines()) == 1 and "password authentication failed" in err, err
    assert "not-the-password" not in err + out
