"""The connection to the tracking store: its experiment found or created, and its refusals said in one line."""

import os

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import TrackingError, brief
from mnist_pipeline.files import project_root
from mnist_pipeline.tracking.env import is_server
from mnist_pipeline.tracking.rest import EXPERIMENT_TAGS, health


def connect(uri: str, experiment: str, registered_model: str | None = None) -> str:
    """Point MLflow at the store and return the id of `experiment`, creating it on first use. A server
    that is down, or refuses these credentials, is a TrackingError that says what to do; `registered_model`,
    if the caller registers one, is named in the permission an admin would grant."""
    mlflow.set_tracking_uri(uri)
    if is_server(uri):
        check_reachable(uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        return found.experiment_id if found else _create_experiment(experiment, uri)
    except MlflowException as exc:
        raise refusal(exc, uri, experiment, registered_model) or TrackingError(
            f"MLflow tracking store {uri} is not usable: {brief(exc)}"
        ) from None


def find_experiment(name: str, uri: str) -> str | None:
    """The id of experiment `name` in the store at `uri`, if it exists."""
    found = MlflowClient(uri).get_experiment_by_name(name)
    return found.experiment_id if found else None


def check_reachable(uri: str) -> None:
    """A server that is down or unknown fails here, with the reason, before any training."""
    try:
        health(uri, timeout=1)
    except OSError as exc:  # rest.Unreachable, which says why
        raise TrackingError(f"MLflow tracking server {uri} is not reachable: {exc}") from None


def refusal(
    exc: MlflowException, uri: str, experiment: str, registered_model: str | None = None
) -> TrackingError | None:
    """The server's 401 or 403 as a message that says what to do; never the password."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    status = exc.get_http_status_code()
    if status == 401:
        who = f"user {user!r}" if user else "a request without credentials"
        return TrackingError(
            f"MLflow tracking server {uri} refused {who} (HTTP 401): set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD to an account of that server"
        )
    if status == 403:
        model = f" --model {registered_model}" if registered_model else ""
        return TrackingError(
            f"MLflow tracking server {uri}: user {user!r} lacks the EDIT permission on experiment "
            f"{experiment!r} (HTTP 403), so it cannot log runs there; an admin can grant it: "
            f"python -m mnist_pipeline.server grant {user} {experiment} EDIT{model}"
        )
    return None


def _create_experiment(experiment: str, uri: str) -> str:
    # Artifacts go beside the store at the real root; MLflow's default (./mlruns of the current
    # directory) would put them inside DVC's temporary copy, deleted after the experiment. A
    # server keeps them where it was told (--artifacts-destination).
    location = None if is_server(uri) else (project_root() / "mlruns").as_uri()
    try:
        return mlflow.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
    except MlflowException:  # a parallel queued experiment created it first
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id
