"""The pipeline's figures: matplotlib figures or PNG bytes in return, no file written.

Figures are made without pyplot: no display backend, no global registry to close them from.
"""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from mnist_pipeline.data.splits import Split
from mnist_pipeline.training import scoring

SAMPLES = 10  # the article's row of the first training images


def render(
    model: nn.Module,
    history: Sequence[dict],
    samples: Split,
    classes: Sequence[str],
    *,
    matrix: Sequence[Sequence[int]],
    robust: dict[str, float],
    clean_accuracy: float,
) -> dict[str, bytes]:
    """The PNGs of a trained model by file name: curves, sample images with the model's guesses,
    confusion matrix, accuracy under distortions against `clean_accuracy`. The plot stage writes them;
    the train stage records them."""
    names = [classes[i] for i in samples.labels.tolist()]
    guesses = [classes[i] for i in scoring.predict(model, samples.images).argmax(1).tolist()]
    figures = {
        "loss.png": curves(history, "loss", "Cross-entropy loss"),
        "accuracy.png": curves(history, "accuracy", "Accuracy"),
        "samples.png": sample_grid(samples.images.numpy(), names, guesses),
        "confusion.png": confusion(matrix, classes),
        "robustness.png": robustness(robust, clean_accuracy),
    }
    return {name: _png(figure) for name, figure in figures.items()}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No software version in the metadata: the same figure gives the same bytes.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def curves(history: Sequence[dict], metric: str, label: str) -> Figure:
    """Train and test `metric` against the epoch, as the article plots them."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    for split in ("train", "test"):
        ax.plot(epochs, [r[f"{split}_{metric}"] for r in history], label=f"{split}_{metric}")
    ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, labels: Sequence[str], predicted: Sequence[str]) -> Figure:
    """The article's row of digits, each titled with its label and the model's prediction."""
    fig = Figure(figsize=(len(images), 1.4))
    axes = fig.subplots(1, len(images))
    for ax, image, label, guess in zip(np.atleast_1d(axes), images, labels, predicted, strict=True):
        ax.imshow(image.squeeze(), cmap="gray")
        ax.set_title(f"{label} ({guess})", fontsize=9, color="black" if label == guess else "red")
        ax.axis("off")
    fig.suptitle("label (predicted)", fontsize=9)
    fig.tight_layout()
    return fig


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """Counts of actual (rows) against predicted (columns) classes."""
    counts = np.asarray(matrix)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    for (row, col), n in np.ndenumerate(counts):
        ax.text(
            col, row, str(n), ha="center", va="center", fontsize=7, color="white" if n > counts.max() / 2 else "black"
        )
    ticks = range(len(counts))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="actual", title="Confusion matrix (test set)")
    if any(len(name) > 1 for name in classes):  # names, not digits: label the ticks, slanted to fit
        ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
    fig.tight_layout()
    return fig


def robustness(accuracy: dict[str, float], clean: float) -> Figure:
    """Test accuracy under each distortion (metrics/robustness.json's rows) against the undistorted one."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    names = sorted(accuracy)  # robustness.json's order: the same figure from the file or from the report
    ax.barh(names, [accuracy[n] for n in names], color="tab:blue")
    ax.axvline(clean, color="black", linestyle="--")
    for row, name in enumerate(names):
        ax.text(accuracy[name], row, f" {accuracy[name]:.1%}", va="center", fontsize=7)
    ax.invert_yaxis()  # read top down
    ax.set(
        xlim=(0, 1.1),
        xlabel="test accuracy",
        title=f"Accuracy on distorted test digits (dashed: undistorted, {clean:.2%})",
    )
    fig.tight_layout()
    return fig
