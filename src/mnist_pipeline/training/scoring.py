"""A model's loss and accuracy on a split: what training scores after each epoch, and every report builds on."""

import torch
from torch import nn
from torch.nn import functional as F

from mnist_pipeline.data.splits import Split

# Scoring needs no gradients, so chunks can be large, as long as they fit the caches: 1,000 images
# through the cnn-aug recipe's CNN (100 MB of feature maps in its first layer) took 1.5 times as long as
# 256 at a time. The article's MLP gives the same logits, bit for bit, either way.
EVAL_BATCH = 256


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Logits (float32) for `images`, in evaluation mode; computed in bf16 autocast if `precision` is bf16."""
    model.eval()
    device = images.device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return torch.cat([model(chunk) for chunk in images.split(EVAL_BATCH)]).float()


def scores(logits: torch.Tensor, labels: torch.Tensor, split: str) -> dict[str, float]:
    """Mean loss and accuracy, named after the split they score: {f"{split}_loss", f"{split}_accuracy"}."""
    return {
        f"{split}_loss": F.cross_entropy(logits, labels).item(),
        f"{split}_accuracy": (logits.argmax(1) == labels).float().mean().item(),
    }


def evaluate(model: nn.Module, data: Split, split: str, precision: str = "fp32") -> dict[str, float]:
    """`scores` of the model's predictions for `data`, computed in `precision`."""
    return scores(predict(model, data.images, precision), data.labels, split)
