"""Load a dataset's raw IDX files once as tensors with ToTensor's values: pixels / 255 as float32, labels int64."""

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_pipeline.data.catalog import IMAGE_SHAPE, NUM_CLASSES
from mnist_pipeline.errors import DataError
from mnist_pipeline.files import digest as file_digest

IMAGES_MAGIC = 2051  # IDX header: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # IDX header: unsigned bytes, 1 dimension


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1], as ToTensor gives them
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n])


def checksums(data_dir: str | Path) -> dict[str, str]:
    """The raw files' names and md5s."""
    return {path.name: file_digest(path, "md5") for path in sorted(Path(data_dir).glob("*.gz"))}


def fingerprint(sums: dict[str, str]) -> str:
    """A short fingerprint of the raw files' checksums: which data a run used."""
    return hashlib.sha256("".join(f"{name}:{md5}\n" for name, md5 in sums.items()).encode()).hexdigest()[:16]


def load_split(data_dir: str | Path, train: bool) -> Split:
    """The training (60,000) or test (10,000) split, read and checked in one pass."""
    prefix = "train" if train else "t10k"
    images_path = Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz"
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: images of {images.shape[1:]} pixels, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    pixels = torch.from_numpy(images).unsqueeze(1).float().div_(255)
    return Split(pixels, torch.from_numpy(labels).long())


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decode one gzipped IDX file whose header must carry `magic`."""
    try:
        with gzip.open(path) as f:
            raw = bytearray(f.read())  # writable, so torch.from_numpy needs no copy or warning
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; run `dvc repro download` first") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataError(f"{path}: wrong IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def holdout(split: Split, n: int, seed: int) -> tuple[Split, Split]:
    """`split` less `n` images drawn with `seed`, and those `n` images: a validation set held out of
    the training set, the same for every trial of a search. The rest keeps the files' order."""
    if not 0 < n < len(split):
        raise DataError(f"cannot hold out {n} of {len(split)} training images for validation")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    rest, held = order[n:].sort().values, order[:n].sort().values
    return (Split(split.images[rest], split.labels[rest]), Split(split.images[held], split.labels[held]))
