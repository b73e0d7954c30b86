"""Models and digit images for predict, the served model and the demo."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_pipeline.config import ModelConfig, Params, from_dict
from mnist_pipeline.data.splits import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from mnist_pipeline.serving import onnx_model
from mnist_pipeline.training.model import MLP, save_checkpoint

from support.tiny import REPO_PARAMS, train_in_process
from support.tools import MNIST_MIRROR

# README's tuned recipe, 2 epochs: about 97 % on real MNIST (plain SGD at lr 0.1, batch 64 stays
# under 95 % after 2 epochs and takes longer).
TUNED = {
    "optimizer": "adamw",
    "schedule": "onecycle",
    "lr": 0.008,
    "batch_size": 512,
    "epochs": 2,
    "weight_decay": 0.01,
}


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A checkpoint that really reads digits: the article's MLP, normalised, trained on real MNIST."""
    if not MNIST_MIRROR:
        pytest.skip("needs MNIST_MIRROR (real MNIST files)")
    raw = {
        **REPO_PARAMS,
        "model": {**REPO_PARAMS["model"], "normalize": True},
        "train": {**REPO_PARAMS["train"], **TUNED},
    }
    params = from_dict(Params, raw, source="tuned params")
    records, training = train_in_process(params, Path(MNIST_MIRROR))
    assert records[-1]["test_accuracy"] > 0.96, records
    path = tmp_path_factory.mktemp("trained") / "model.pt"
    save_checkpoint(training.model, params.model, tuple("0123456789"), path)
    return path


def exported(checkpoint: Path) -> Path:
    """The checkpoint's ONNX export, beside it as the train stage writes it (model.pt -> model.onnx)."""
    path = checkpoint.with_suffix(".onnx")
    if not path.exists():
        onnx_model.export(checkpoint, path)
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


def as_scanned(
    digit: np.ndarray, seed: int, *, scale: bool = True, shift: bool = True, dark_ink: bool = True, colour: bool = False
) -> Image.Image:
    """A 28x28 MNIST digit as a scan or a photo might show it: enlarged 2-10x, placed off-centre on a
    larger page, dark ink on light paper (or light on dark), in colour or grey."""
    rng = np.random.default_rng(seed)
    size = int(28 * rng.uniform(2, 10)) if scale else 28
    enlarged = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    ink: np.ndarray = np.asarray(enlarged, np.float32) / 255
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
