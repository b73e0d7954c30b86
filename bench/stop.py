"""SIGTERM to `sweep run STUDY --workers 2` in the middle of its trials, as `kill`, `docker stop` or a CI
cancel send it to the launcher alone: its exit code, the seconds until it and its workers are gone, the
trials' states in the study storage and the MLflow runs' statuses.

    PYTHONPATH=src python bench/stop.py [STUDY] [--epochs 3] [--data data]   # after `make repro` (data/)

It runs in a scratch copy of the project (params.yaml, sweep.yaml, the data linked): a fresh study and
store, nothing of yours touched. The last line is machine-readable: exit=<launcher's> stop_seconds=
interrupted=<processes that printed their `interrupted` line> trials=<state:count,...> runs=<status:count,...>
"""

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from mnist_pipeline import cli
from mnist_pipeline.files import project_root
from mnist_pipeline.sweep.storage import JOURNAL, SweepError, open_storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="mlp")
    parser.add_argument("--epochs", type=int, default=3, help="each trial's budget (default 3)")
    parser.add_argument("--data", default="data", help="the project's data folder (default: data)")
    args = parser.parse_args()
    root, scratch = project_root(), Path(tempfile.mkdtemp(prefix="mnist-stop-"))
    try:
        for name in ("params.yaml", "sweep.yaml"):
            shutil.copy(root / name, scratch / name)
        (scratch / "data").symlink_to((root / args.data).resolve())
        env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MNIST_SWEEP_STORAGE")}
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
        command = [sys.executable, "-m", "mnist_pipeline.sweep", "run", args.study, "--workers", "2"]
        command += ["--epochs", str(args.epochs)]
        launcher = subprocess.Popen(command, cwd=scratch, env=env, stderr=subprocess.PIPE, text=True)
        try:
            _stop(scratch, args.study, launcher)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stop(scratch: Path, study: str, launcher: subprocess.Popen) -> None:
    running = _two_trials_training(scratch, study, launcher)
    print(f"stop: trials {', '.join(str(t.number) for t in running)} training; SIGTERM to the launcher", flush=True)
    launcher.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = launcher.communicate()
    workers = [int(t.user_attrs["worker"].split(":")[1]) for t in running]
    while any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    seconds = time.monotonic() - sent
    trials = collections.Counter(t.state.name for t in _trials(scratch, study))
    runs = collections.Counter(r.info.status for r in _runs(scratch))
    print(err.strip())
    print(
        f"exit={launcher.returncode} stop_seconds={seconds:.1f} interrupted={err.count('interrupted (')} "
        f"trials={','.join(f'{k}:{v}' for k, v in sorted(trials.items()))} "
        f"runs={','.join(f'{k}:{v}' for k, v in sorted(runs.items()))}"
    )


def _two_trials_training(scratch: Path, study: str, launcher: subprocess.Popen) -> list[optuna.trial.FrozenTrial]:
    """Until both workers train a trial (an epoch done each)."""
    while True:
        if launcher.poll() is not None:
            said = launcher.stderr.read() if launcher.stderr else ""
            raise SweepError(f"sweep run ended ({launcher.returncode}) before two trials trained: {said}")
        running = [
            t for t in _trials(scratch, study) if t.state.name == "RUNNING" and t.user_attrs.get("epochs_trained")
        ]
        if len(running) == 2:
            return running
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Alive and not a zombie (an init that does not reap may keep the exited one listed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _trials(scratch: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    if not (scratch / JOURNAL).exists():
        return []
    try:
        return optuna.load_study(study_name=study, storage=open_storage(None, scratch)).get_trials()
    except KeyError:  # not made yet
        return []


def _runs(scratch: Path) -> list:
    from mnist_pipeline.tracking import env

    env.configure()  # MLflow's settings (telemetry off), then mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{scratch / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


if __name__ == "__main__":
    sys.exit(cli.run(main))
