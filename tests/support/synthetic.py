"""Tiny synthetic MNIST in the real file format (gzipped IDX), which the real loading code reads."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.data.splits import IMAGES_MAGIC, LABELS_MAGIC


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


def known_image() -> torch.Tensor:
    """(1, 1, 28, 28): an asymmetric shape, so any wrong turn or flip shows."""
    image = torch.zeros(1, 1, *IMAGE_SHAPE)
    image[0, 0, 3:12, 5:8] = 1.0
    image[0, 0, 3:5, 8:15] = 0.5
    return image


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return write_synthetic_mnist(tmp_path / "mnist")
