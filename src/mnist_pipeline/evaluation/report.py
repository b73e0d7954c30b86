"""The test report that the evaluate stage writes and the train stage records: the headline metrics
(metrics/eval.json), and the files DVC draws as plots: per-class precision and recall, the accuracy under
each distortion, the predictions (the confusion matrix)."""

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mnist_pipeline.data.catalog import NUM_CLASSES
from mnist_pipeline.data.splits import Split
from mnist_pipeline.files import json_text, rounded
from mnist_pipeline.training.scoring import predict, scores

# metrics/eval.json holds the only metrics DVC lists, and DVC orders them by name across files: every
# name sorts after test_accuracy and test_loss, so the headline leads `dvc metrics show`.
ROBUST_MEAN, ROBUST_WORST = "test_robust_mean", "test_robust_worst"


@dataclass(frozen=True)
class Report:
    """A model's test report: the headline metrics and what the plots draw."""

    headline: dict[str, float]  # test_accuracy, test_loss (the training loop's scores), the robustness summary
    per_class: list[dict]  # {class, precision, recall} per class
    robust: dict[str, float]  # distortion name -> accuracy
    labels: torch.Tensor
    predicted: torch.Tensor

    def json_files(self) -> dict[str, str]:
        """The JSON files' text by their name in metrics/: the evaluate stage writes them, the run records them."""
        return {
            "eval.json": json_text(self.headline),
            "per_class.json": json_text(self.per_class),
            "robustness.json": json_text(robustness_rows(self.robust)),
        }

    def stage_files(self) -> dict[str, bytes]:
        """The evaluate stage's files by its option names: what it writes, and what the train stage hands
        over to it (stages/handover.py)."""
        texts = self.json_files()
        return {
            "metrics": texts["eval.json"].encode(),
            "per_class": texts["per_class.json"].encode(),
            "robustness": texts["robustness.json"].encode(),
            "predictions": self.predictions_csv().encode(),
        }

    def predictions_csv(self) -> str:
        """One row per test image, the shape DVC's confusion-matrix plot template reads."""
        rows = (f"{a},{p}" for a, p in zip(self.labels.tolist(), self.predicted.tolist(), strict=True))
        return "actual,predicted\n" + "\n".join(rows) + "\n"


def build_report(model: nn.Module, test: Split, classes: Sequence[str], robust: dict[str, float]) -> Report:
    """Score `model` on the test set; `robust`: its accuracy under each distortion (robustness.report)."""
    logits = predict(model, test.images)
    predicted = logits.argmax(1)
    summary = {ROBUST_MEAN: sum(robust.values()) / len(robust), ROBUST_WORST: min(robust.values())}
    return Report(
        headline=rounded(scores(logits, test.labels, "test") | summary),
        per_class=[
            {"class": name, **rounded(pr)}
            for name, pr in per_class(confusion_matrix(test.labels, predicted), classes).items()
        ],
        robust=robust,
        labels=test.labels,
        predicted=predicted,
    )


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """counts[actual, predicted]."""
    flat = labels.long() * NUM_CLASSES + predictions.long()
    return torch.bincount(flat.cpu(), minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def per_class(matrix: torch.Tensor, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision and recall of each class; 0.0 where a class was never predicted or never present."""
    hits = matrix.diag().double()
    predicted, actual = matrix.sum(0).double(), matrix.sum(1).double()
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, hits / actual.clamp(min=1), 0.0)
    return {name: {"precision": precision[c].item(), "recall": recall[c].item()} for c, name in enumerate(classes)}


def robustness_rows(robust: dict[str, float]) -> list[dict]:
    """metrics/robustness.json: a {distortion, accuracy} row per distortion, by name, as DVC's bar charts read them."""
    return [{"distortion": name, "accuracy": robust[name]} for name in sorted(robust)]


def robustness_from_rows(rows: list[dict]) -> dict[str, float]:
    """metrics/robustness.json's rows back as distortion name -> accuracy."""
    return {row["distortion"]: row["accuracy"] for row in rows}


def matrix_from_csv(text: str) -> torch.Tensor:
    """The confusion matrix of metrics/predictions.csv's rows."""
    rows = list(csv.DictReader(io.StringIO(text)))
    labels = torch.tensor([int(r["actual"]) for r in rows])
    return confusion_matrix(labels, torch.tensor([int(r["predicted"]) for r in rows]))
