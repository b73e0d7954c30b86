"""The article's MLP and the CNN, and checkpoints that rebuild them alone and never run code from the file."""

import dataclasses
import os

import pytest
import torch

from mnist_pipeline.config import ModelConfig
from mnist_pipeline.errors import CheckpointError
from mnist_pipeline.files import digest, save_torch
from mnist_pipeline.training.model import CNN, MLP, build, load_checkpoint, save_checkpoint

from support.tiny import train_in_process

ARTICLE = ModelConfig(kind="mlp", hidden=(128, 64), channels=(16, 32), normalize=False, dropout=0.0)
DIGITS = tuple("0123456789")


def test_article_architecture():
    model = MLP(ARTICLE)
    linears = list(model.layers)
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 64), (64, 10)]
    assert sum(p.numel() for p in model.parameters()) == 109_386
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_the_cnn_convolves_pools_and_ends_in_the_dense_layers():
    cnn = build(dataclasses.replace(ARTICLE, kind="cnn", hidden=(128,)))
    assert isinstance(cnn, CNN)
    convs = [m for m in cnn.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 16, (3, 3)), (16, 32, (3, 3))]
    assert [(m.in_features, m.out_features) for m in cnn.layers] == [(32 * 7 * 7, 128), (128, 10)]
    assert sum(p.numel() for p in cnn.parameters()) == 206_922
    assert cnn(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    three = build(dataclasses.replace(ARTICLE, kind="cnn", channels=(8, 8, 8), hidden=(4,)))
    assert three(torch.rand(2, 1, 28, 28)).shape == (2, 10) and three.layers[0].in_features == 8 * 3 * 3


def test_the_cnn_learns_the_synthetic_digits(params, tiny_mnist):
    cnn = dataclasses.replace(
        params,
        model=dataclasses.replace(params.model, kind="cnn", channels=(8, 16)),
        train=dataclasses.replace(params.train, optimizer="adamw", lr=0.01, epochs=2),
    )
    records, training = train_in_process(cnn, tiny_mnist)
    assert isinstance(training.model, CNN) and records[-1]["test_accuracy"] > 0.9  # chance is 0.1


def test_normalize_standardises_inside_the_model():
    torch.manual_seed(0)
    plain = MLP(ARTICLE)
    normalized = MLP(ModelConfig(kind="mlp", hidden=(128, 64), channels=(16, 32), normalize=True, dropout=0.0))
    normalized.load_state_dict(plain.state_dict())  # same weights: normalisation adds none
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(normalized(x), plain((x - 0.1307) / 0.3081), atol=1e-6)


def test_checkpoint_round_trip_is_exact_and_reproducible(tmp_path):
    cfg = ModelConfig(kind="mlp", hidden=(32,), channels=(16, 32), normalize=True, dropout=0.0)
    model = MLP(cfg)
    classes = ("T-shirt/top", *"123456789")
    save_checkpoint(model, cfg, classes, tmp_path / "a.pt")
    save_checkpoint(model, cfg, classes, tmp_path / "b.pt")
    assert digest(tmp_path / "a.pt") == digest(tmp_path / "b.pt")  # DVC sees no change on a rerun
    loaded, loaded_cfg, loaded_classes = load_checkpoint(tmp_path / "a.pt")
    assert loaded_cfg == cfg and loaded_classes == classes and not loaded.training
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"model.pt: file not found; run `dvc repro train` first"):
        load_checkpoint(tmp_path / "model.pt")


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model.pt: not a PyTorch checkpoint \(not a zip archive\)"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(MLP(ARTICLE), ARTICLE, DIGITS, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model.pt: not a PyTorch checkpoint \(not a zip archive\)"):
        load_checkpoint(path)


def test_damaged_weights_are_caught(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(MLP(ARTICLE), ARTICLE, DIGITS, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # torch.load alone would accept this
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"model.pt: corrupt: archive/data/\d+ does not match its checksum"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "model.pt"
    other = MLP(ModelConfig(kind="mlp", hidden=(32,), channels=(16, 32), normalize=False, dropout=0.0))
    config = {"kind": "mlp", "hidden": [128, 64], "channels": [16, 32], "normalize": False}
    save_torch(path, {"model_config": config, "classes": DIGITS, "state_dict": other.state_dict()})
    with pytest.raises(CheckpointError, match=r"model.pt: weights do not fit the architecture .*size mismatch"):
        load_checkpoint(path)


def test_checkpoint_with_bad_config(tmp_path):
    path = tmp_path / "model.pt"
    config = {"kind": "mlp", "hidden": [128, 64], "channels": [16, 32], "normalize": False, "dropout": 0.0, "depth": 3}
    save_torch(path, {"model_config": config, "classes": DIGITS, "state_dict": {}})
    with pytest.raises(CheckpointError, match=r"unknown key depth"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this would run a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_executes_code_from_the_file(tmp_path):
    path, marker = tmp_path / "model.pt", tmp_path / "pwned"
    torch.save({"model_config": _Payload(marker), "classes": DIGITS, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="model.pt: refused: it holds objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()
