"""A project folder for a search (the repo's params.yaml, tiny synthetic training files, a tiny study), the
sweep command run there as a user runs it, and what its study and MLflow store hold after."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.entities import Run

from mnist_pipeline.sweep.storage import open_storage
from mnist_pipeline.tracking import study_runs

from support.at_call import command
from support.projects import store
from support.stores import seed_store
from support.synthetic import write_synthetic_mnist
from support.tools import REPO, clean_env

TINY_STUDY = {
    "trials": 6,
    "epochs": 3,
    "validation": 200,
    "pruner": "median",
    "seed": 0,
    "params": {"model.kind": "mlp", "model.hidden": [32]},
    "space": {
        "train.lr": {"float": [0.01, 0.3], "log": True},
        "train.optimizer": {"choices": ["sgd", "adamw"]},
        "model.dropout": {"float": [0.0, 0.3]},
        "train.batch_size": {"int": [16, 64]},
    },
}


def write_sweep(root: Path, **study) -> None:
    """sweep.yaml with the one study `tiny`: TINY_STUDY, with these keys changed."""
    (root / "sweep.yaml").write_text(yaml.safe_dump({"studies": {"tiny": {**TINY_STUDY, **study}}}))


def sweep_folder(root: Path) -> Path:
    """A project root for the search: params.yaml, sweep.yaml and the training files only (no t10k
    files: a trial that read the test set would fail)."""
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_synthetic_mnist(root / "data" / "mnist", n_train=1200, n_test=8)
    for test_file in (root / "data" / "mnist").glob("t10k-*"):
        test_file.unlink()
    write_sweep(root)
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    """sweep_folder in the test's own folder, its MLflow store made (empty: support/stores.py)."""
    root = sweep_folder(tmp_path)
    seed_store(root)
    return root


@pytest.fixture
def bare_folder(tmp_path) -> Path:
    """sweep_folder in the test's own folder, no MLflow store: for the tests that check none is made."""
    return sweep_folder(tmp_path)


def start_sweep(root: Path, *args: str, command: tuple[str, ...] = ("-m", "mnist_pipeline.sweep"), **env: str):
    """`python -m mnist_pipeline.sweep ARGS` in `root`, as a user runs it (or `command` before ARGS). A new
    study's parent run is taken at once (settle time 0): one process starts it, or `env` says."""
    return subprocess.Popen(
        [sys.executable, *command, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(PYTHONPATH=str(REPO / "src"), **{study_runs.SETTLE_ENV: "0", **env}),
    )


def at_call(
    target: str, n: int, action: str, when: str = "before", *more: tuple[str, int, str, str]
) -> tuple[str, ...]:
    """The sweep command with `target`'s Nth call wrapped (and `more`: support/at_call.py), for `command`."""
    return command("mnist_pipeline.sweep", (target, n, action, when), *more)


def sweep(root: Path, *args: str, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    process = start_sweep(root, *args, **options)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def trials(root: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(None, root)).get_trials()


def trials_if_any(root: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return trials(root)
    except KeyError:  # no study yet
        return []


def search_runs(root: Path) -> list[Run]:
    """Every run of the search's experiment in the store at `root`, deleted ones aside."""
    client = store(root)
    experiment = client.get_experiment_by_name("mnist-mlp-search")
    assert experiment is not None, root
    return list(client.search_runs([experiment.experiment_id]))


def worker_pid(trial: optuna.trial.FrozenTrial) -> int:
    """The pid in a trial's worker name (host:pid:place)."""
    return int(trial.user_attrs["worker"].split(":")[1])
