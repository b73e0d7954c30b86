"""The MLflow model: for each image, the predicted class (an index) and the 10 class probabilities.

A pyfunc "model from code": tracking.log_model logs this file, and MLflow runs it when it loads
the model (the scoring server of `make serve`, mlflow.pyfunc.load_model). MLflow's PyTorch
flavour could answer with only one tensor, the logits. It takes MNIST-prepared pixels or encoded
images (serving/inputs.py), and runs on PyTorch or, after `use("onnx")`, on onnxruntime with the
ONNX export logged beside the checkpoint.
"""

from functools import partial
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext

from mnist_pipeline.errors import CheckpointError, ImageError
from mnist_pipeline.serving import inputs, onnx_model
from mnist_pipeline.serving.inference import RUNTIMES, probabilities
from mnist_pipeline.training.model import load_checkpoint


class DigitClassifier(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        # load_checkpoint reads tensors only (weights_only), so no code from the file runs.
        self.checkpoint = Path(context.artifacts["checkpoint"])
        self.model, config, self.classes = load_checkpoint(self.checkpoint)
        self.kind = config.kind
        self.exported = context.artifacts.get("onnx")  # the ONNX export, in models logged since 2026-12-03
        self.use("torch")

    def use(self, runtime: str) -> None:
        """Answer on `runtime`: torch, or onnx (the ONNX export on onnxruntime). Chosen after loading,
        not through MLflow's model_config, which MLflow would log as the run's params."""
        if runtime not in RUNTIMES:
            raise CheckpointError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if runtime == "onnx":
            if self.exported is None:
                raise CheckpointError("this model was logged without an ONNX export: use --runtime torch")
            self.probabilities = onnx_model.load(Path(self.exported), self.checkpoint).probabilities
        else:
            self.probabilities = partial(probabilities, self.model)
        self.runtime = runtime

    # The hint says ndarray though a DataFrame comes too: MLflow validates nothing for a bare ndarray
    # hint, and warns at every load about a union.
    def predict(self, context: PythonModelContext, model_input: np.ndarray, params: dict | None = None) -> list[dict]:
        """model_input: float32 (N, 1, 28, 28) pixels in [0, 1], MNIST-prepared, or a table whose
        one column, image, holds base64 PNG or JPEG files (prepared as `predict` prepares them)."""
        try:
            images = inputs.images(model_input)
        except ImageError as exc:  # the scoring server answers 400 with this message
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from None
        p = self.probabilities(images)
        # Records, so the scoring server answers {"predictions": [{"class": 7, "probabilities": [...]}]};
        # plain lists, because a DataFrame's making and to_dict cost the server more than the model does.
        return [{"class": c, "probabilities": row} for c, row in zip(p.argmax(1).tolist(), p.tolist(), strict=True)]


mlflow.models.set_model(DigitClassifier())
