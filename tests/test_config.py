"""params.yaml is read into typed, frozen config; every bad value stops with file, key and value."""

from pathlib import Path

import pytest
import yaml

from mnist_pipeline.config import flatten, load_params
from mnist_pipeline.errors import ParamsError

from support.tools import REPO


def write_params(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_are_the_articles():
    p = load_params(REPO / "params.yaml")
    assert (p.train.lr, p.train.epochs, p.train.batch_size) == (0.001, 50, 64)
    assert (p.train.optimizer, p.train.momentum, p.train.schedule) == ("sgd", 0.0, "constant")
    assert p.model.hidden == (128, 64) and not p.model.normalize and p.model.kind == "mlp"
    assert p.data.dataset == "mnist" and p.train.processes == 1


def test_flatten_uses_dvc_dotted_keys():
    flat = flatten(load_params(REPO / "params.yaml"))
    assert flat["train.lr"] == 0.001 and flat["model.hidden"] == [128, 64] and flat["seed"] == 0
    assert flat["train.augment.rotation"] == 0.0  # `dvc exp run -S train.augment.rotation=15` names it so


def test_augment_is_off_by_default_and_a_string_number_is_read(tmp_path):
    assert not load_params(REPO / "params.yaml").train.augment.active
    path = write_params(tmp_path, lambda r: r["train"]["augment"].update(rotation="15", elastic="2e0"))
    augment = load_params(path).train.augment
    assert (augment.rotation, augment.elastic, augment.active) == (15.0, 2.0, True)


def test_numeric_strings_are_coerced(tmp_path):
    # YAML 1.1 reads 1e-3 as the string "1e-3"; dvc exp run -S can produce strings too.
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("lr: 0.001", "lr: 1e-3"))
    assert load_params(path).train.lr == 0.001


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["train"].update(lr=-1), "train.lr = -1: must be > 0"),
        (lambda r: r["train"].update(lr=0), "train.lr = 0: must be > 0"),
        (lambda r: r["train"].update(lr="abc"), "train.lr = 'abc': expected a number"),
        (lambda r: r["train"].update(epochs="ten"), "train.epochs = 'ten': expected an integer"),
        (lambda r: r["train"].update(epochs=0), "train.epochs = 0: must be >= 1"),
        (lambda r: r["train"].update(epochs=2.5), "train.epochs = 2.5: expected an integer"),
        (lambda r: r["train"].update(batch_size=0), "train.batch_size = 0: must be >= 1"),
        (lambda r: r["train"].update(batch_size=True), "train.batch_size = True: expected a number, got a boolean"),
        (lambda r: r["train"].update(optimizer="rmsprop"), "train.optimizer = 'rmsprop': expected one of sgd, adamw"),
        (lambda r: r["train"].update(momentum=1.0), "train.momentum = 1.0: must be in [0, 1)"),
        (lambda r: r["train"].update(lr_decay=0.5), "unknown key train.lr_decay"),
        (lambda r: r["train"].update(label_smoothing=1), "train.label_smoothing = 1: must be in [0, 1)"),
        (lambda r: r.update(sed=1), "unknown key sed"),
        (lambda r: r["model"].update(hidden=[]), "model.hidden = []: must list at least one width"),
        (lambda r: r["model"].update(kind="rnn"), "model.kind = 'rnn': expected one of mlp, cnn"),
        (
            lambda r: r["model"].update(channels=[16, 0]),
            "model.channels = [16, 0]: must list at least one width, each >= 1",
        ),
        (lambda r: r["data"].update(dataset="emnist"), "data.dataset = 'emnist': expected one of mnist, fashion-mnist"),
        (lambda r: r["train"].update(processes=0), "train.processes = 0: must be >= 1"),
        (lambda r: r["model"].update(hidden="128"), "model.hidden = '128': expected a list of integers"),
        (lambda r: r["train"].pop("epochs"), "missing key train.epochs"),
        (lambda r: r.pop("train"), "missing key train"),
        (lambda r: r.update(train=5), "train must be a mapping of keys, got 5"),
        (lambda r: r["tracking"].update(experiment=""), "tracking.experiment = '': expected a non-empty string"),
        (lambda r: r["train"]["augment"].update(rotation=-5), "train.augment.rotation = -5: must be in [0, 180]"),
        (lambda r: r["train"]["augment"].update(rotation=181), "train.augment.rotation = 181: must be in [0, 180]"),
        (lambda r: r["train"]["augment"].update(scale=0.6), "train.augment.scale = 0.6: must be in [0, 0.5]"),
        (lambda r: r["train"]["augment"].update(translate="far"), "train.augment.translate = 'far': expected a number"),
        (
            lambda r: r["train"]["augment"].update(shear=True),
            "train.augment.shear = True: expected a number, got a boolean",
        ),
        (lambda r: r["train"]["augment"].update(elastic=9), "train.augment.elastic = 9: must be in [0, 8]"),
        (lambda r: r["train"]["augment"].update(flip=True), "unknown key train.augment.flip"),
        (lambda r: r["train"]["augment"].pop("shear"), "missing key train.augment.shear"),
        (lambda r: r["train"].update(augment=15), "train.augment must be a mapping of keys, got 15"),
    ],
)
def test_bad_values_name_file_key_and_value(tmp_path, edit, expected):
    path = write_params(tmp_path, edit)
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML at line 3, column 1: expected ',' or '\]'"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_config_is_frozen():
    p = load_params(REPO / "params.yaml")
    with pytest.raises(AttributeError):
        p.train.lr = 1.0
