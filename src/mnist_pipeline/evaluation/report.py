"""The test report that the evaluate stage writes and the train stage records: loss and accuracy (the
training loop's own scores), per-class precision and recall, the confusion matrix, the predictions."""

from collections.abc import Sequence

import torch
from torch import nn

from mnist_pipeline.data.catalog import NUM_CLASSES
from mnist_pipeline.data.splits import Split
from mnist_pipeline.files import json_text, rounded
from mnist_pipeline.training.scoring import predict, scores


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


def build_report(model: nn.Module, test: Split, classes: Sequence[str]) -> tuple[dict, torch.Tensor]:
    """metrics/eval.json's content, and the predicted class of every test image."""
    logits = predict(model, test.images)
    predicted = logits.argmax(1)
    matrix = confusion_matrix(test.labels, predicted)
    return {
        **rounded(scores(logits, test.labels, "test")),
        "per_class": {name: rounded(pr) for name, pr in per_class(matrix, classes).items()},
        "confusion_matrix": matrix.tolist(),  # rows: actual class, columns: predicted class
    }, predicted


def evaluation_files(report: dict, predicted: torch.Tensor, labels: torch.Tensor, robust: dict) -> dict[str, bytes]:
    """The evaluate stage's files by its option names: metrics (eval.json), predictions (CSV), robustness
    (JSON); the train stage hands the same over to it (stages/handover.py)."""
    return {
        "metrics": json_text(report).encode(),
        "predictions": predictions_csv(labels, predicted).encode(),
        "robustness": json_text(robust).encode(),
    }


def predictions_csv(labels: torch.Tensor, predicted: torch.Tensor) -> str:
    """One row per test image, the shape DVC's confusion-matrix plot template reads."""
    rows = (f"{a},{p}" for a, p in zip(labels.tolist(), predicted.tolist(), strict=True))
    return "actual,predicted\n" + "\n".join(rows) + "\n"


def per_class_table(report: dict) -> dict[str, list]:
    """The report's per-class figures as columns: class, precision, recall."""
    rows = report["per_class"].items()
    return {
        "class": [name for name, _ in rows],
        "precision": [f["precision"] for _, f in rows],
        "recall": [f["recall"] for _, f in rows],
    }
