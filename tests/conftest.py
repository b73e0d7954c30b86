"""Shared fixtures: tiny synthetic MNIST in the real file format, and the repo's own params."""

import atexit
import dataclasses
import gzip
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mnist_pipeline import engine
from mnist_pipeline.config import ModelConfig, Params, load_params
from mnist_pipeline.data import IMAGES_MAGIC, LABELS_MAGIC, load_split, read_idx
from mnist_pipeline.model import MLP, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
# The real datasets, where the environment offers them (CI sets both to local copies).
MNIST_MIRROR = os.environ.get("MNIST_MIRROR", "")
FASHION_MNIST_MIRROR = os.environ.get("FASHION_MNIST_MIRROR", "")


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """Write `array` (uint8) as a gzipped IDX file, the format of the official MNIST files."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits a small MLP can learn: class c lights a 6x6 block at a spot of its own, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        row, col = 2 + 8 * (c // 4), 2 + 8 * (c % 4)
        images[i, row : row + 6, col : col + 6] = 255
    return images, labels


def write_synthetic_mnist(folder: Path, n_train: int = 512, n_test: int = 256) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_split(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, IMAGES_MAGIC)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, LABELS_MAGIC)
    return folder


def train_in_process(params: Params, data_dir: Path, first_epoch: int = 1, training: engine.Training | None = None):
    """engine.fit run to its end on the CPU; returns the records and the training objects."""
    train, test = load_split(data_dir, train=True), load_split(data_dir, train=False)
    training = training or engine.Training.create(params, len(train), torch.device("cpu"))
    return list(engine.fit(training, train, test, params.train, first_epoch)), training


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return write_synthetic_mnist(tmp_path / "mnist")


@pytest.fixture
def params() -> Params:
    """The repo's params.yaml, shrunk to a few fast epochs."""
    base = load_params(REPO / "params.yaml")
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, hidden=(32, 16)),
        train=dataclasses.replace(base.train, lr=0.1, epochs=3, batch_size=32),
    )


# --- End-to-end helpers: a real git + DVC project on tiny synthetic data ---

N_TRAIN, N_TEST, EPOCHS = 512, 256, 2
TINY = {"epochs": EPOCHS, "batch_size": 32, "lr": 0.1}


# Neither the user's git and DVC settings nor their MLflow, DVC or data variables reach the tools
# the tests run: a test behaves the same on every machine and for every user.
PRIVATE_CONFIG = Path(tempfile.mkdtemp(prefix="mnist-pipeline-tests-config-"))
atexit.register(shutil.rmtree, PRIVATE_CONFIG, ignore_errors=True)
LEAKY = ("MLFLOW_", "DVC_", "MNIST_MIRROR", "FASHION_MNIST_MIRROR", "GIT_")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a tool run as a user would run it: this venv's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY)}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com",
               DVC_GLOBAL_CONFIG_DIR=str(PRIVATE_CONFIG / "dvc-global"),
               DVC_SYSTEM_CONFIG_DIR=str(PRIVATE_CONFIG / "dvc-system"),
               DVC_NO_ANALYTICS="true", MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


def sh(*cmd: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command as a user would (see clean_env); fail with its output unless `check` is off."""
    done = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def run_queue(root: Path, workers: int, env: dict | None = None, wait_s: float = 900) -> str:
    """`dvc queue start -j N`, then wait until the queue is empty; every task must succeed (a
    failure shows that task's log). Returns `dvc queue status`.

    Its output goes to a file, not a pipe: the workers it leaves running inherit its stdout, and a
    pipe would stay open (and a reader blocked) for as long as they live."""
    env = env or clean_env()
    with open(root / "queue-start.log", "w") as log:
        done = subprocess.run(["dvc", "queue", "start", "-j", str(workers)], cwd=root, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    assert done.returncode == 0, (root / "queue-start.log").read_text()
    deadline = time.monotonic() + wait_s
    while "Queued" in (status := sh("dvc", "queue", "status", cwd=root, env=env).stdout) or "Running" in status:
        assert time.monotonic() < deadline, status
        time.sleep(2)
    failed = [line.split()[0] for line in status.splitlines() if line.split()[-1:] == ["Failed"]]
    if failed:  # a task that failed before its stages ran has no log of its own, only its worker's
        logs = [sh("dvc", "queue", "logs", task, cwd=root, env=env, check=False) for task in failed]
        workers = sorted((root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.out"))
        raise AssertionError("\n".join([status, *(log.stdout[-4000:] + log.stderr for log in logs),
                                        *(w.read_text()[-6000:] for w in workers)]))
    return status


def write_tiny_params(path: Path, dataset: str = "mnist", **train) -> None:
    """The repo's params.yaml with a small model and these train settings, as a stage reads it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["dataset"] = dataset
    params["model"]["hidden"] = [32, 16]
    params["train"].update(train)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(root: Path) -> Path:
    """A copy of this repo's pipeline with tiny params, committed, its download stage pre-filled.

    The official checksums are never relaxed: the synthetic files are recorded as the download
    stage's output with `dvc commit`, exactly as if that stage had produced them.
    """
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    write_tiny_params(root / "params.yaml", **TINY)
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.analytics", "false", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "pipeline", cwd=root)
    write_synthetic_mnist(root / "data" / "mnist", N_TRAIN, N_TEST)
    sh("dvc", "commit", "-f", "download", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "data", cwd=root)
    return root


def store(root: Path):
    """A client of the MLflow store the stages wrote at `root`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


PER_EPOCH = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
PLOTS = {f"plots/{name}.png" for name in ("loss", "accuracy", "samples", "confusion")}


def recorded_run_id(output: str) -> str:
    """The run id the train stage printed ("train: recorded run <id>: ...")."""
    found = re.findall(r"train: recorded run ([0-9a-f]{32}):", output)
    assert len(found) == 1, output
    return found[0]


def assert_complete_run(client, run_id: str, epochs: int, model_name: str = "mnist-mlp"):
    """The run holds the whole record of one training: FINISHED, params, every per-epoch point, the
    evaluation (per-class metrics and eval.json), the plots, the model, and a registered version."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"train.lr", "train.epochs", "data.dataset", "model.kind", "seed"} <= set(run.data.params)
    for metric in PER_EPOCH:
        assert [p.step for p in client.get_metric_history(run_id, metric)] == list(range(1, epochs + 1)), metric
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == PLOTS
    assert {a.path for a in client.list_artifacts(run_id, "metrics")} == {"metrics/eval.json", "metrics/per_class.json"}
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    assert len(versions) == 1, versions
    (model,) = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert versions[0].source == f"models:/{model.model_id}"
    return run


def project_runs(root: Path, **search) -> list:
    """The runs of the pipeline's experiment in the store at `root` (search_runs options pass through)."""
    client = store(root)
    return client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id], **search)


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real `dvc repro` of the tiny project, shared by the end-to-end tests."""
    root = make_project(tmp_path_factory.mktemp("project"))
    return root, sh("dvc", "repro", cwd=root)


# --- Models for predict, the served model and the demo ---

@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A checkpoint that really reads digits: the article's MLP, 2 epochs of the tuned recipe
    (docs/performance.md) on real MNIST.

    About 97 %; plain SGD at lr 0.1, batch 64 stays under 95 % after 2 epochs and takes longer.
    """
    if not MNIST_MIRROR:
        pytest.skip("needs MNIST_MIRROR (real MNIST files)")
    base = load_params(REPO / "params.yaml")
    params = dataclasses.replace(
        base, model=dataclasses.replace(base.model, normalize=True),
        train=dataclasses.replace(base.train, optimizer="adamw", schedule="onecycle", lr=0.008, batch_size=512,
                                  epochs=2, weight_decay=0.01))
    records, training = train_in_process(params, Path(MNIST_MIRROR))
    assert records[-1]["test_accuracy"] > 0.96, records
    path = tmp_path_factory.mktemp("trained") / "model.pt"
    save_checkpoint(training.model, params.model, tuple("0123456789"), path)
    return path


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory) -> Path:
    """Random weights: enough where only the form of an answer is checked, not its digit."""
    cfg = ModelConfig(kind="mlp", hidden=(32, 16), channels=(16, 32), normalize=False, dropout=0.0)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrained") / "model.pt"
    save_checkpoint(MLP(cfg), cfg, tuple("0123456789"), path)
    return path


@pytest.fixture(scope="session")
def real_digits() -> tuple[np.ndarray, np.ndarray]:
    """100 real MNIST test digits, 10 of each class, as uint8 (100, 28, 28) light on black, and their labels."""
    if not MNIST_MIRROR:
        pytest.skip("needs MNIST_MIRROR (real MNIST files)")
    images = read_idx(Path(MNIST_MIRROR) / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(Path(MNIST_MIRROR) / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    rng = np.random.default_rng(7)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), 10, replace=False) for c in range(10)])
    return images[chosen], labels[chosen]


def as_scanned(digit: np.ndarray, seed: int, *, scale: bool = True, shift: bool = True, dark_ink: bool = True,
               colour: bool = False) -> Image.Image:
    """A 28x28 MNIST digit as a scan or a photo might show it: enlarged 2-10x, placed off-centre on a
    larger page, dark ink on light paper (or light on dark), in colour or grey."""
    rng = np.random.default_rng(seed)
    size = int(28 * rng.uniform(2, 10)) if scale else 28
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    if shift:
        page = np.zeros((size + rng.integers(20, 200), size + rng.integers(20, 200)), np.float32)
        top, left = rng.integers(0, page.shape[0] - size + 1), rng.integers(0, page.shape[1] - size + 1)
        page[top : top + size, left : left + size] = ink
        ink = page
    if colour:  # navy pen on cream paper, or chalk on a green board
        pen, paper = ((20, 30, 110), (250, 244, 225)) if dark_ink else ((235, 235, 180), (30, 70, 40))
    else:
        pen, paper = ((0,) * 3, (255,) * 3) if dark_ink else ((255,) * 3, (0,) * 3)
    rgb = np.array(paper) + (np.array(pen) - np.array(paper)) * ink[..., None]
    image = Image.fromarray(np.clip(rgb.round(), 0, 255).astype(np.uint8))
    return image if colour else image.convert("L")


# A real team tracking server (PostgreSQL + mlflow server with basic-auth), shared by the session.
from servers import team_server  # noqa: E402,F401  (a fixture: imported here, every test file can use it)
