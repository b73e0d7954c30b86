"""End-to-end projects: a real git + DVC copy of this pipeline on tiny synthetic data, and its MLflow record."""

import atexit
import configparser
import functools
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from support.stores import seed_store
from support.synthetic import write_synthetic_mnist
from support.tiny import tiny_params
from support.tools import REPO, clean_env, sh

N_TRAIN, N_TEST, EPOCHS = 512, 256, 2
TINY: dict[str, Any] = {"epochs": EPOCHS, "batch_size": 32, "lr": 0.1}
PER_EPOCH = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
PLOTS = {f"plots/{name}.png" for name in ("loss", "accuracy", "samples", "confusion", "robustness")}


def make_project(root: Path) -> Path:
    """A copy of this repo's pipeline with tiny params, committed, its download stage pre-filled, its
    MLflow store made (empty: support/stores.py). Built once per test process (six DVC and git
    commands, 3-5 s) and copied: nothing in it names its folder.
    """
    shutil.copytree(_template(), root, symlinks=True, dirs_exist_ok=True)
    return root


@functools.cache
def _template() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mnist-pipeline-project-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return _build_project(root)


def _build_project(root: Path) -> Path:
    """The official checksums are never relaxed: the synthetic files are recorded as the download
    stage's output with `dvc commit`, exactly as if that stage had produced them."""
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for folder in ("src", "conf"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_defaults(root, tiny_params(**TINY))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.analytics", "false", cwd=root)
    hydra = configparser.ConfigParser()
    hydra.read(REPO / ".dvc" / "config")
    for key, value in hydra["hydra"].items():  # params.yaml composed from conf/, as in this repo
        sh("dvc", "config", f"hydra.{key}", value, cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "pipeline", cwd=root)
    write_synthetic_mnist(root / "data" / "mnist", N_TRAIN, N_TEST)
    sh("dvc", "commit", "-f", "download", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "data", cwd=root)
    seed_store(root)
    return root


def committed_run(root: Path) -> Path:
    """A project at `root` whose default run is committed, as this repo's is: one real `dvc repro`."""
    make_project(root)
    sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "baseline run", cwd=root)
    return root


def exp_params(root: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: its params.yaml}."""
    return exp_values(root, "params", "params.yaml")


def exp_values(root: Path, kind: str, path: str) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: the values of `path`}; kind: params or metrics."""
    rows = {}
    for baseline in json.loads(sh("dvc", "exp", "show", "--json", cwd=root).stdout):
        for exp in baseline.get("experiments") or []:
            for revision in exp["revs"]:
                rows[revision["name"]] = revision["data"][kind][path]["data"]
    return rows


def write_defaults(root: Path, params: dict[str, Any]) -> None:
    """`params` as the project's defaults, as a user sets them: conf/config.yaml (this repo's `defaults`
    list, then the params), and params.yaml written from it as `dvc exp run` writes it."""
    config = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    conf = {"defaults": config["defaults"], **params}
    (root / "conf" / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def store(root: Path) -> MlflowClient:
    """A client of the MLflow store the stages wrote at `root`."""
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def recorded_run_id(output: str) -> str:
    """The run id the train stage printed ("train: recorded run <id>: ...")."""
    found = re.findall(r"train: recorded run ([0-9a-f]{32}):", output)
    assert len(found) == 1, output
    return found[0]


def assert_complete_run(client, run_id: str, epochs: int, model_name: str = "mnist-mlp"):
    """The run holds the whole record of one training: FINISHED, params, every per-epoch point, the
    evaluation (metrics/'s JSON files: eval.json, per_class.json, robustness.json), the plots,
    the model, and a registered version."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"train.lr", "train.epochs", "data.dataset", "model.kind", "seed"} <= set(run.data.params)
    for metric in PER_EPOCH:
        assert [p.step for p in client.get_metric_history(run_id, metric)] == list(range(1, epochs + 1)), metric
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == PLOTS
    assert {a.path for a in client.list_artifacts(run_id, "metrics")} == {
        "metrics/eval.json",
        "metrics/per_class.json",
        "metrics/robustness.json",
    }
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    assert len(versions) == 1, versions
    (model,) = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert versions[0].source == f"models:/{model.model_id}"
    return run


def project_runs(root: Path, **search) -> list:
    """The runs of the pipeline's experiment in the store at `root` (search_runs options pass through)."""
    client = store(root)
    experiment = client.get_experiment_by_name("mnist-mlp")
    assert experiment is not None, root
    return client.search_runs([experiment.experiment_id], **search)


@pytest.fixture(scope="session")
def two_commits(tmp_path_factory) -> Path:
    """A project set up for DVC's plots as this repo is (its .dvc/config, and the page `make` writes
    where it builds the venv), with two runs committed: lr 0.1, then lr 0.05 (HEAD)."""
    root = make_project(tmp_path_factory.mktemp("two-commits"))
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    page = ["python", "-m", "mnist_pipeline.evaluation.vega_page", ".venv/dvc-plots.html"]
    sh(*page, cwd=root, env=clean_env(PYTHONPATH="src"))
    for lr in (TINY["lr"], 0.05):
        write_defaults(root, tiny_params(**(TINY | {"lr": lr})))
        sh("dvc", "repro", cwd=root)
        sh("git", "add", "-A", cwd=root)
        sh("git", "commit", "-qm", f"lr {lr}", cwd=root)
    return root


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real `dvc repro` of the tiny project, shared by the end-to-end tests."""
    root = make_project(tmp_path_factory.mktemp("project"))
    return root, sh("dvc", "repro", cwd=root)
