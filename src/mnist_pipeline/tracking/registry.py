"""The run's model: logged once with its signature, registered once as a version, and the champion crowned.

Each step looks for what an earlier try left before it acts, so retrying one after a lost answer (the
server acted, its answer never came) logs no second model and registers no second version.
"""

import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array
from mlflow.utils import requirements_utils

from mnist_pipeline.errors import TrackingError

CHAMPION = "champion"
CROWN_ATTEMPTS = 10  # decisions a registration makes before it gives up on a racing alias
# What served_model.py gives: per image, the class (an index) and the probabilities of all classes.
# Declared, not inferred: inference calls an int column a hint. No input schema: the model takes
# pixels (a tensor) or encoded images (a table), and MLflow enforces one schema, so the model checks
# its input itself (serving/inputs.py), and its messages say what is wrong.
SIGNATURE = ModelSignature(outputs=Schema([ColSpec("long", "class"), ColSpec(Array("double"), "probabilities")]))


def log_model(checkpoint: Path, exported: Path, example: np.ndarray) -> str:
    """Log the checkpoint and its ONNX export as the active run's served model (served_model.py) with
    its signature and an input example, unless the run has its model already; return the model's URI."""
    logged = _logged_model()
    if logged is not None:
        return logged
    with _named(checkpoint, exported) as artifacts:
        return mlflow.pyfunc.log_model(name="model", **_served_model(artifacts, example)).model_uri


def save_model(checkpoint: Path, exported: Path | None, folder: Path) -> None:
    """The checkpoint (and its ONNX export, if given) as the same MLflow model, in `folder` rather than
    a run: what `make serve` serves where the store has no champion."""
    with _named(checkpoint, exported) as artifacts:
        mlflow.pyfunc.save_model(str(folder), **_served_model(artifacts, None))


@contextlib.contextmanager
def _named(checkpoint: Path, exported: Path | None) -> Iterator[dict[str, str]]:
    """The files as the model's artifacts, named model.pt and model.onnx in it whatever their names
    here (the train stage's are still temporary ones)."""
    with tempfile.TemporaryDirectory() as folder:
        named = {"checkpoint": Path(folder) / "model.pt", "onnx": Path(folder) / "model.onnx"}
        sources = {"checkpoint": checkpoint, "onnx": exported}
        for key, source in sources.items():
            if source is not None:
                shutil.copyfile(source, named[key])
        yield {key: str(named[key]) for key, source in sources.items() if source is not None}


def _served_model(artifacts: dict[str, str], example: np.ndarray | None) -> dict[str, Any]:
    _known_requirements()
    package = Path(__file__).parents[1]
    return dict(
        python_model=str(package / "serving" / "served_model.py"),  # a model from code: no pickle
        artifacts=artifacts,
        code_paths=[str(package)],  # the model's code travels with it
        signature=SIGNATURE,
        input_example=example,  # MLflow runs the saved model on it as a check
        # Explicit, so MLflow does not infer requirements in a subprocess that may reach the network.
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
            f"mlflow=={mlflow.__version__}",
            f"pillow=={metadata.version('pillow')}",  # images sent to the scoring server
            f"onnxruntime=={metadata.version('onnxruntime')}",  # the ONNX runtime
        ],
    )


def _known_requirements() -> None:
    """MLflow checks a model's pip requirements against this environment, and to find each one's module
    it first maps every file of every installed distribution to its package: 2.5 s at each model logged
    here. Our requirements (_served_model) and their modules are all it needs."""
    if requirements_utils._MODULES_TO_PACKAGES is None:
        known = {name: [name] for name in ("torch", "numpy", "pandas", "mlflow", "onnxruntime")} | {"PIL": ["pillow"]}
        requirements_utils._MODULES_TO_PACKAGES = known  # type: ignore[assignment]  # MLflow's None until filled


def _logged_model() -> str | None:
    """The URI of the model the active run logged completely, if it has one."""
    run = mlflow.active_run()
    if run is None:
        return None
    found = MlflowClient().search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return f"models:/{ready[0].model_id}" if ready else None


def register(
    name: str, model_uri: str, test_accuracy: float, dataset: str, card: str | None = None
) -> tuple[str, bool]:
    """Register the model as a new version, unless it is one already, with its model card (if given)
    as the version's description, and crown the champion (see _crown). Returns the version and
    whether it is the champion now."""
    client = MlflowClient()
    version = _version_of(client, name, model_uri)
    if version is None:
        tags = {"test_accuracy": f"{test_accuracy:.6f}", "dataset": dataset}
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Created version ..." lines: the stage says it
            version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    if card is not None:  # the same again after a retry: harmless
        client.update_model_version(name, version, description=card)
    return version, _crown(client, name, dataset) == version


def _version_of(client: MlflowClient, name: str, model_uri: str) -> str | None:
    found = client.search_model_versions(f"name = '{name}' and source_path = '{model_uri}'")
    return str(found[0].version) if found else None


def _crown(client: MlflowClient, name: str, dataset: str) -> str:
    """Point the champion alias at the most accurate version from the champion on, of the champion's
    dataset (a tie keeps the champion); return that version.

    Queued experiments register at once, and MLflow's registry has no compare-and-set. So each
    registration, having added its version, decides over all versions newer than the champion, not
    just its own, and decides again after it writes: whichever write lands last, the writer's next
    look corrects it."""
    for _ in range(CROWN_ATTEMPTS):
        champion = _champion(client, name)
        if champion is not None:
            dataset = champion.tags.get("dataset", "mnist")
        first = int(champion.version) if champion else 0
        candidates = [
            v
            for v in client.search_model_versions(f"name = '{name}'")
            if int(v.version) >= first and v.tags.get("dataset", "mnist") == dataset
        ]
        best = str(max(candidates, key=lambda v: (float(v.tags.get("test_accuracy", "-1")), -int(v.version))).version)
        if champion is not None and str(champion.version) == best:
            return best
        with contextlib.suppress(MlflowException):  # another registration set the alias first: look again
            client.set_registered_model_alias(name, CHAMPION, best)
    raise TrackingError(
        f"model {name!r}: the {CHAMPION} alias kept changing under "
        f"{CROWN_ATTEMPTS} attempts to set it; registrations are racing"
    )


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        return None
