"""The train stage's files for evaluate and plot are taken back only for the very inputs and code they came from."""

from pathlib import Path

import pytest

from mnist_pipeline.stages import handover


@pytest.fixture
def inputs(tmp_path) -> list:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t10k-images-idx3-ubyte.gz").write_bytes(b"images")
    (tmp_path / "model.pt").write_bytes(b"weights")
    return [tmp_path / "model.pt", tmp_path / "data", b"metrics"]


FILES = {"metrics": b"{}", "predictions": b"actual,predicted\n"}


def test_files_are_taken_back_for_the_same_inputs_only(inputs):
    model, data, _ = inputs
    handover.leave(model, "evaluate", inputs, FILES)
    assert handover.take(model, "evaluate", inputs) == FILES
    assert handover.take(model, "plot", inputs) is None  # another stage's
    assert handover.take(model, "evaluate", [model, data, b"other metrics"]) is None
    model.write_bytes(b"other weights")
    assert handover.take(model, "evaluate", inputs) is None
    model.write_bytes(b"weights")
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"other images")
    assert handover.take(model, "evaluate", inputs) is None


def test_leaving_again_replaces_all_that_was_left(inputs):
    handover.leave(inputs[0], "plot", inputs, {"a.png": b"1", "b.png": b"2"})
    handover.leave(inputs[0], "plot", inputs, {"a.png": b"3"})
    assert handover.take(inputs[0], "plot", inputs) == {"a.png": b"3"}


def test_a_change_to_the_package_code_discards_them(inputs, tmp_path, monkeypatch):
    code = tmp_path / "package"
    (code / "evaluation").mkdir(parents=True)
    (code / "evaluation" / "robustness.py").write_text("EVERY = 4\n")
    monkeypatch.setattr(handover, "PACKAGE", code)
    handover.leave(inputs[0], "evaluate", inputs, FILES)
    assert handover.take(inputs[0], "evaluate", inputs) == FILES
    (code / "evaluation" / "robustness.py").write_text("EVERY = 2\n")
    assert handover.take(inputs[0], "evaluate", inputs) is None


def test_nothing_left_nothing_taken(inputs):
    assert handover.take(Path(inputs[0]), "evaluate", inputs) is None
