"""A project folder for a search: the repo's params.yaml, tiny synthetic training files, a tiny study."""

from pathlib import Path

import yaml

from support.synthetic import write_synthetic_mnist
from support.tools import REPO

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
