"""A model's loss and accuracy on a split: what training scores after each epoch, and every report builds on."""

import torch
from torch import nn
from torch.nn import functional as F

from mnist_pipeline.data.splits import Split

EVAL_BATCH = 1000  # scoring needs no gradients, so large chunks are cheap


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits for `images`, in evaluation mode."""
    model.eval()
    return torch.cat([model(chunk) for chunk in images.split(EVAL_BATCH)])


def scores(logits: torch.Tensor, labels: torch.Tensor, split: str) -> dict[str, float]:
    """Mean loss and accuracy, named after the split they score: {f"{split}_loss", f"{split}_accuracy"}."""
    return {
        f"{split}_loss": F.cross_entropy(logits, labels).item(),
        f"{split}_accuracy": (logits.argmax(1) == labels).float().mean().item(),
    }


def evaluate(model: nn.Module, data: Split, split: str) -> dict[str, float]:
    return scores(predict(model, data.images), data.labels, split)
