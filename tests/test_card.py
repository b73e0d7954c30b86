"""The model card: generated from a run's figures, and set in dvc.yaml's artifacts entry with every other
line of the file kept."""

import shutil

import torch
import yaml

from mnist_pipeline.data.catalog import MNIST
from mnist_pipeline.evaluation import card
from mnist_pipeline.evaluation.report import Report
from mnist_pipeline.evaluation.robustness import DISTORTIONS

from support.tools import REPO

REPORT = Report(
    headline={"test_accuracy": 0.9171, "test_loss": 0.2893},
    per_class=[{"class": c, "precision": 0.9 + int(c) / 100, "recall": 0.95} for c in "0123456789"],
    robust={name: 0.9 for name in DISTORTIONS} | {"shift_4": 0.1784, "rotate_30": 0.6024, "thinner": 0.7624},
    labels=torch.zeros(0),
    predicted=torch.zeros(0),
)


def make(params, chosen_by: str | None = None) -> str:
    return card.text("mnist-mlp", params, MNIST, MNIST.files, (60000, 10000), REPORT, chosen_by)


def test_the_card_says_what_the_model_is_and_how_it_scored(params):
    text = make(params)
    assert text.startswith("# mnist-mlp: MLP 784-32-16-10 on mnist\n")
    assert "**Test accuracy 0.9171**, loss 0.2893 (10,000 test images" in text
    for name, md5 in MNIST.files.items():  # the data, by its official checksums
        assert f"- `{name}` md5 `{md5}`" in text
    assert "| train.lr | 0.1 |" in text and "| model.kind | mlp |" in text and "| train.augment | off |" in text
    assert "tracking." not in text  # where it was recorded is not what made it
    assert text.count("| 0.9500 |") == 10  # a row per class
    assert "| rotated 30° | 0.6024 |" in text
    assert set(card.DISTORTIONS) == set(DISTORTIONS)  # every distortion has its words
    assert all(f"| {words} |" in text for words in card.DISTORTIONS.values())
    # The weakest three, in words and figures, under the known limits; no search named where none chose it.
    assert "Hurt most by: moved 4 px off-centre (17.8%), rotated 30° (60.2%), thinner strokes (76.2%)." in text
    assert "## Chosen by" not in text
    assert make(params) == text  # nothing in it changes from one call to the next


def test_a_searched_model_names_the_validation_accuracy_that_chose_it(params):
    chosen = "The search `mlp` (sweep.yaml): its trial 12 reached validation accuracy 0.9871 ..."
    assert f"## Chosen by\n\n{chosen}\n" in make(params, chosen)


def test_dvc_yaml_gets_the_card_and_keeps_every_other_line(params, tmp_path):
    pipeline = tmp_path / "dvc.yaml"
    shutil.copy(REPO / "dvc.yaml", pipeline)
    before = pipeline.read_text()
    text = make(params)
    card.write_dvc_yaml(pipeline, "mnist-mlp", text, ["mlp", "mnist", "pytorch", "onnx"])
    after = pipeline.read_text()
    head = [whole.split("\nartifacts:\n")[0].rstrip() for whole in (before, after)]
    assert head[0] == head[1]  # every line before the entry, comments and all
    parsed = yaml.safe_load(after)
    assert parsed["artifacts"]["mnist-mlp"] == {
        "path": "models/model.pt",
        "type": "model",
        "desc": text,
        "labels": ["mlp", "mnist", "pytorch", "onnx"],
    }
    assert parsed["stages"] == yaml.safe_load(before)["stages"]
    card.write_dvc_yaml(pipeline, "mnist-mlp", text, ["mlp", "mnist", "pytorch", "onnx"])
    assert pipeline.read_text() == after  # the same card again: the same bytes
