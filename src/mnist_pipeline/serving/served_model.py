"""The MLflow model: for each image, the predicted class (an index) and the 10 class probabilities.

A pyfunc "model from code": tracking.log_model logs this file, and MLflow runs it when it loads
the model (the scoring server of `make serve`, mlflow.pyfunc.load_model). MLflow's PyTorch
flavour could answer with only one tensor, the logits.
"""

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from mnist_pipeline.serving.inference import probabilities
from mnist_pipeline.training.model import load_checkpoint


class DigitClassifier(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        # load_checkpoint reads tensors only (weights_only), so no code from the file runs.
        self.model, _, self.classes = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context: PythonModelContext, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        """model_input: float32 (N, 1, 28, 28) pixels in [0, 1], MNIST-prepared; MLflow checks it
        against the logged signature before this runs."""
        p = probabilities(self.model, np.asarray(model_input, dtype=np.float32))
        # Records, so the scoring server answers {"predictions": [{"class": 7, "probabilities": [...]}]}.
        return pd.DataFrame({"class": p.argmax(1), "probabilities": p.tolist()})


mlflow.models.set_model(DigitClassifier())
