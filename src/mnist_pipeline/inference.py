"""The path that MLflow models logged before the package was grouped by concern (2026-12-03) import
their `probabilities` from: they still load. The code is serving/inference.py."""

from mnist_pipeline.serving.inference import probabilities

__all__ = ["probabilities"]
