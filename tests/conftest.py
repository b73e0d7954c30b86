"""Shared fixtures: tiny synthetic MNIST in the real file format, and the repo's own params."""

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
# Real MNIST, where the environment offers it (CI sets MNIST_MIRROR to a local copy).
MNIST_MIRROR = os.environ.get("MNIST_MIRROR", "")


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
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return folder


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
