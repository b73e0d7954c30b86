"""The test-set report: what the evaluate stage writes and the train stage records, from one function."""

from collections.abc import Sequence

import torch
from torch import nn

from mnist_pipeline import engine
from mnist_pipeline.data import Split
from mnist_pipeline.files import rounded


def report(model: nn.Module, test: Split, classes: Sequence[str]) -> tuple[dict, torch.Tensor]:
    """metrics/eval.json's content, and the predicted class of every test image."""
    logits = engine.predict(model, test.images)
    predicted = logits.argmax(1)
    matrix = engine.confusion_matrix(test.labels, predicted)
    return {
        **rounded(engine.scores(logits, test.labels)),
        "per_class": {name: rounded(pr) for name, pr in engine.per_class(matrix, classes).items()},
        "confusion_matrix": matrix.tolist(),  # rows: actual class, columns: predicted class
    }, predicted


def predictions_csv(labels: torch.Tensor, predicted: torch.Tensor) -> str:
    """One row per test image, the shape DVC's confusion-matrix plot template reads."""
    rows = (f"{a},{p}" for a, p in zip(labels.tolist(), predicted.tolist()))
    return "actual,predicted\n" + "\n".join(rows) + "\n"


def per_class_metrics(report: dict) -> dict[str, float]:
    """The report's per-class figures as flat metric names: precision_0, recall_Trouser, ..."""
    return {f"{kind}_{name}": figures[kind] for name, figures in report["per_class"].items()
            for kind in ("precision", "recall")}
