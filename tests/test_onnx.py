"""The ONNX export answers as the PyTorch model does, for both kinds, and predict runs it (--runtime onnx)."""

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_pipeline.config import Params
from mnist_pipeline.data.splits import Split, load_split
from mnist_pipeline.errors import CheckpointError
from mnist_pipeline.serving import inference, onnx_model, predict
from mnist_pipeline.training import engine
from mnist_pipeline.training.model import load_checkpoint, save_checkpoint

from support.synthetic import write_synthetic_mnist
from support.tools import MNIST_MIRROR

PARITY_IMAGES = 1000
TOLERANCE = 1e-5  # the largest difference allowed between the two runtimes' probabilities


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Split, Split]:
    """2,000 training and 1,000 test digits: real MNIST where MNIST_MIRROR is set, else tiny synthetic
    ones in the same files."""
    folder = Path(MNIST_MIRROR) if MNIST_MIRROR else None
    if folder is None:
        folder = write_synthetic_mnist(tmp_path_factory.mktemp("mnist"), n_train=2000, n_test=PARITY_IMAGES)
    return load_split(folder, train=True).head(2000), load_split(folder, train=False).head(PARITY_IMAGES)


def trained(params: Params, kind: Literal["mlp", "cnn"], train: Split, path: Path) -> Path:
    """A checkpoint of `kind` trained one epoch on `train`: weights with real structure, in seconds."""
    model = dataclasses.replace(params.model, kind=kind, channels=(4, 8), normalize=True)
    cfg = dataclasses.replace(
        params, model=model, train=dataclasses.replace(params.train, epochs=1, lr=0.02, momentum=0.9)
    )
    training = engine.Training.create(cfg, len(train), torch.device("cpu"))
    list(engine.fit(training, train, train.head(100), cfg.train, split="test"))
    save_checkpoint(training.model, cfg.model, tuple("0123456789"), path)
    return path


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_the_onnx_export_gives_the_same_class_and_probabilities(params, kind, digits, tmp_path, record_property):
    train, test = digits
    checkpoint = trained(params, kind, train, tmp_path / "model.pt")
    onnx_model.export(checkpoint, tmp_path / "model.onnx")
    images = test.images.numpy()
    assert len(images) == PARITY_IMAGES
    torch_p = inference.from_checkpoint(checkpoint).predict(images)
    onnx_p = inference.from_checkpoint(checkpoint, "onnx").predict(images)
    largest = float(np.abs(torch_p - onnx_p).max())
    disagreements = int((torch_p.argmax(1) != onnx_p.argmax(1)).sum())
    record_property("largest_difference", largest)  # the closing note's figures (pytest --junitxml)
    print(
        f"\n{kind}: {len(images)} {'real' if MNIST_MIRROR else 'synthetic'} digits, largest probability "
        f"difference {largest:.2e}, class disagreements {disagreements}"
    )
    assert disagreements == 0
    assert largest <= TOLERANCE
    assert len(set(torch_p.argmax(1).tolist())) >= 3  # answers that vary with the image: agreeing means something


def test_the_export_is_reproducible_and_says_what_it_is(untrained_model, tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_model.export(untrained_model, first)
    onnx_model.export(untrained_model, second)
    assert first.read_bytes() == second.read_bytes()  # a DVC output that reproduces byte for byte
    session = onnx_model.load(first, untrained_model)
    assert session.about.classes == tuple("0123456789") and session.about.kind == "mlp"
    assert session.probabilities(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)  # any batch size


def test_an_export_of_another_checkpoint_is_refused(untrained_model, tmp_path):
    checkpoint = tmp_path / "model.pt"
    model, cfg, classes = load_checkpoint(untrained_model)
    save_checkpoint(model, cfg, classes, checkpoint)
    onnx_model.export(checkpoint, tmp_path / "model.onnx")
    torch.nn.init.zeros_(model.layers[0].bias)  # retrained, say, and the export not made again
    save_checkpoint(model, cfg, classes, checkpoint)
    with pytest.raises(CheckpointError, match=r"model\.onnx was not exported from .*model\.pt: run `dvc repro train`"):
        inference.from_checkpoint(checkpoint, "onnx")
    with pytest.raises(CheckpointError, match=r"missing\.onnx: file not found"):
        onnx_model.load(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"junk\.onnx: not a readable ONNX model"):
        onnx_model.load(tmp_path / "junk.onnx")


def test_predict_on_onnx_prints_the_same_lines(untrained_model, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    checkpoint = folder / "model.pt"
    checkpoint.write_bytes(untrained_model.read_bytes())
    onnx_model.export(checkpoint, folder / "model.onnx")
    images = []
    for number, box in enumerate([(50, 25, 150, 175), (70, 20, 130, 180)]):
        image = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(image).ellipse(box, outline="black", width=14)
        images.append(str(tmp_path / f"{number}.png"))
        image.save(images[-1])
    monkeypatch.chdir(tmp_path)
    lines = {}
    for runtime in ("torch", "onnx"):
        assert predict.main([*images, "--model", str(checkpoint), "--top", "3", "--runtime", runtime]) == 0
        lines[runtime] = capsys.readouterr()
    assert lines["onnx"].out == lines["torch"].out and lines["torch"].out.count("\n") == 2
    assert lines["onnx"].err.startswith(f"predict: model {folder / 'model.onnx'} (mlp, onnxruntime, ")
