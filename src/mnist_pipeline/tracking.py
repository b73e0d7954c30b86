"""The only module that talks to MLflow: one run per pipeline execution, shared by its stages."""

import contextlib
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Before mlflow is imported: a tracking server that is down should fail a stage in seconds, not
# after minutes of retries, and nothing is sent anywhere but the tracking store.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The model is logged from the CPU; MLflow would load it on CUDA, where there is one, to check the
# input example, and a CPU export refuses that. Users on a GPU machine set it too (README, MLflow).
os.environ.setdefault("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cpu")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types import ColSpec, Schema, TensorSpec  # noqa: E402
from mlflow.types.schema import Array  # noqa: E402

from mnist_pipeline.config import Params, flatten  # noqa: E402
from mnist_pipeline.data import IMAGE_SHAPE  # noqa: E402
from mnist_pipeline.errors import TrackingError, brief  # noqa: E402

# The stages print their own one-line summaries; MLflow's INFO chatter would only repeat them.
logging.getLogger("mlflow").setLevel(logging.WARNING)

MODEL_DIGEST_TAG = "model_sha256"  # ties a run to the exact models/model.pt it produced
MODEL_URI_TAG = "model_uri"
CHAMPION = "champion"


def project_root() -> Path:
    # Inside `dvc exp run --temp/--queue` the stage runs in a copy; DVC_ROOT is the real root.
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite store mlflow.db at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


@contextlib.contextmanager
def training_run(params: Params, resume_run_id: str | None = None) -> Iterator[str]:
    """Start this pipeline execution's run (or reopen an interrupted one); yield its id."""
    experiment_id = _connect(params.tracking.experiment)
    if resume_run_id and _exists(resume_run_id):
        run = mlflow.start_run(run_id=resume_run_id)
    else:
        commit = _git_commit()
        tags = {"git_commit": commit, "mlflow.source.git.commit": commit}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        run = mlflow.start_run(experiment_id=experiment_id, run_name=_run_name(params, commit), tags=tags)
        mlflow.log_params(flatten(params))
    with _closing():
        yield run.info.run_id


@contextlib.contextmanager
def stage_run(params: Params, model_digest: str) -> Iterator[str]:
    """Continue the run that trained the model with this digest (a new run if the store lost it)."""
    experiment_id = _connect(params.tracking.experiment)
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.{MODEL_DIGEST_TAG} = '{model_digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if found:
        run = mlflow.start_run(run_id=found[0].info.run_id)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, tags={MODEL_DIGEST_TAG: model_digest})
    with _closing():
        yield run.info.run_id


def log_epoch(record: dict[str, float]) -> None:
    metrics = {k: v for k, v in record.items() if k != "epoch"}
    mlflow.log_metrics(metrics, step=int(record["epoch"]))


def log_metrics(metrics: dict[str, float]) -> None:
    mlflow.log_metrics(metrics)


# What served_model.py takes and gives: MNIST-prepared images in; per image, the class and the
# probabilities of all classes out. Declared, not inferred: inference calls an int column a hint.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, *IMAGE_SHAPE))]),
    outputs=Schema([ColSpec("long", "class"), ColSpec(Array("double"), "probabilities")]),
)


def log_model(checkpoint: str | Path, example: torch.Tensor, digest: str) -> None:
    """Log the checkpoint as the served model (served_model.py: each image's class and class
    probabilities) with a signature and an input example; tag the run with the file's digest."""
    package = Path(__file__).parent
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(package / "served_model.py"),  # a model from code: no pickle
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(package)],  # the model's code travels with it
        signature=SIGNATURE,
        input_example=example.cpu().numpy(),  # MLflow runs the saved model on it as a check
        # Explicit, so MLflow does not infer requirements in a subprocess that may reach the network.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                          f"pandas=={pd.__version__}", f"mlflow=={mlflow.__version__}"],
    )
    mlflow.set_tags({MODEL_DIGEST_TAG: digest, MODEL_URI_TAG: info.model_uri})


def log_artifacts(paths: list[Path], folder: str | None = None) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=folder)


def register_model(name: str, run_id: str, test_accuracy: float) -> tuple[str, bool]:
    """Register the run's model as a new version; move the champion alias only if it is better.

    Returns the version and whether it became the champion.
    """
    client = MlflowClient()
    model_uri = client.get_run(run_id).data.tags[MODEL_URI_TAG]
    version = mlflow.register_model(model_uri, name, tags={"test_accuracy": f"{test_accuracy:.6f}"}).version
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        best = float(champion.tags.get("test_accuracy", "-1"))
    except MlflowException:  # no champion yet
        best = -1.0
    promoted = test_accuracy > best
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return version, promoted


def _connect(experiment: str) -> str:
    """Point MLflow at the store and return the experiment id, creating it on first use."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        _check_reachable(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found:
            return found.experiment_id
        return _create_experiment(experiment, uri)
    except MlflowException as exc:
        raise TrackingError(f"MLflow tracking store {uri} is not usable: {brief(exc)}") from None


def _check_reachable(uri: str) -> None:
    """A server that is down or unknown fails here, with the reason, before any training."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
    except urllib.error.HTTPError:
        pass  # it answered: reachable, whatever it thinks of /health
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} is not reachable: {reason}") from None


def _create_experiment(experiment: str, uri: str) -> str:
    # Artifacts go beside the store at the real root; MLflow's default (./mlruns of the current
    # directory) would put them inside DVC's temporary copy, deleted after the experiment.
    location = (project_root() / "mlruns").as_uri() if uri.startswith("sqlite:") else None
    # Marks a model-training experiment; MLflow 3 otherwise assumes a GenAI one.
    tags = {"mlflow.experimentKind": "custom_model_development"}
    try:
        return mlflow.create_experiment(experiment, artifact_location=location, tags=tags)
    except MlflowException:  # a parallel queued experiment created it first
        return mlflow.get_experiment_by_name(experiment).experiment_id


def _exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except MlflowException:
        return False


@contextlib.contextmanager
def _closing() -> Iterator[None]:
    """End the run FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM: never left RUNNING."""
    try:
        yield
    except Exception:
        mlflow.end_run("FAILED")
        raise
    except BaseException:  # KeyboardInterrupt, and the stages' SIGTERM handler
        mlflow.end_run("KILLED")
        raise
    mlflow.end_run("FINISHED")


def _git_commit() -> str:
    # DVC names the commit an experiment started from; its temporary copy has its own HEAD.
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True)
    except OSError:  # no git on this machine
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _run_name(params: Params, commit: str) -> str:
    who = os.environ.get("DVC_EXP_NAME") or commit[:7]
    t = params.train
    return f"{who} lr={t.lr:g} bs={t.batch_size} ep={t.epochs} {t.optimizer}"

