"""The path that MLflow models logged before the package was grouped by concern (2026-12-03) import
their `load_checkpoint` from: they still load. The code is training/model.py."""

from mnist_pipeline.training.model import load_checkpoint

__all__ = ["load_checkpoint"]
