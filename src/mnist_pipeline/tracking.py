"""The MLflow side of training: one complete record per execution of the train stage.

The train stage records everything itself (params, per-epoch metrics, the evaluation, the plots,
the model and its registered version). DVC skips evaluate and plot whenever their inputs are
unchanged, a retrained model byte-identical to the committed one for instance, so a record
assembled by three stages would depend on which of them DVC chose to run.
"""

import contextlib
import functools
import io
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

# Before mlflow is imported: a tracking server that is down should fail a stage in seconds, not
# after minutes of retries (this module retries where waiting makes sense), and nothing is sent
# anywhere but the tracking store.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the stage prints one line per epoch
# System metrics every second: a default run trains for under a minute, MLflow's default is 10 s.
os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from mlflow.data.http_dataset_source import HTTPDatasetSource  # noqa: E402
from mlflow.data.meta_dataset import MetaDataset  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types import ColSpec, Schema, TensorSpec  # noqa: E402
from mlflow.types.schema import Array  # noqa: E402

from mnist_pipeline import evaluation  # noqa: E402
from mnist_pipeline.config import Params, TrackingConfig, flatten  # noqa: E402
from mnist_pipeline.data import IMAGE_SHAPE  # noqa: E402
from mnist_pipeline.datasets import Dataset  # noqa: E402
from mnist_pipeline.device import THREADS  # noqa: E402
from mnist_pipeline.errors import TrackingError, brief  # noqa: E402
from mnist_pipeline.files import digest, json_text  # noqa: E402

# The stages print their own one-line summaries; MLflow's INFO chatter would only repeat them, and
# the system-metrics monitor warns at every start on a machine without a GPU.
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)

MODEL_DIGEST_TAG = "model_sha256"  # ties a run to the exact models/model.pt it produced
CHAMPION = "champion"
CROWN_ATTEMPTS = 10  # decisions a registration makes before it gives up on a racing alias
# What served_model.py takes and gives: prepared images in; per image, the class (an index) and
# the probabilities of all classes out. Declared, not inferred: inference calls an int column a hint.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, *IMAGE_SHAPE))]),
    outputs=Schema([ColSpec("long", "class"), ColSpec(Array("double"), "probabilities")]),
)
# How long a run waits for a tracking server that stopped answering, before it gives up.
PATIENCE_S = float(os.environ.get("MNIST_TRACKING_PATIENCE_S", "600"))

T = TypeVar("T")


def project_root() -> Path:
    # Inside `dvc exp run --temp/--queue` the stage runs in a copy; DVC_ROOT is the real root.
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the SQLite store mlflow.db at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def ui_link(base_url: str, experiment_id: str) -> str:
    """The experiment's runs with their charts. MLflow 3.17's UI picks its view from `workflowType`
    in the URL (then the browser's saved choice, else GenAI); it ignores the experiment's tags."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            "?workflowType=machine_learning&compareRunsMode=CHART")


def find_experiment(name: str, uri: str) -> str | None:
    """The id of experiment `name` in the store at `uri`, if it exists."""
    found = MlflowClient(uri).get_experiment_by_name(name)
    return found.experiment_id if found else None


class Run:
    """An open run of the train stage. Epochs go to the store from a background thread, in order,
    and wait there while a tracking server is unreachable, so training never stalls on the store and
    a server restart loses nothing."""

    def __init__(self, run_id: str, experiment_id: str, uri: str):
        self.run_id, self.experiment_id, self.uri = run_id, experiment_id, uri
        self._client = MlflowClient(uri)
        self._pending: queue.Queue[list[Metric] | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._sender = threading.Thread(target=self._send, name="mlflow-epochs", daemon=True)
        self._sender.start()

    def log_epoch(self, record: dict[str, float]) -> None:
        self._raise_failure()
        now, step = int(time.time() * 1000), int(record["epoch"])
        self._pending.put([Metric(k, v, now, step) for k, v in record.items() if k != "epoch"])

    def backfill(self, records: list[dict[str, float]]) -> None:
        """Send the epochs of a resumed run that its record lacks (an interruption can lose the last)."""
        logged = {m.step for m in _patiently(self.uri, lambda: self._client.get_metric_history(
            self.run_id, "test_accuracy"))}
        for record in records:
            if record["epoch"] not in logged:
                self.log_epoch(record)

    def flush(self) -> None:
        """Wait until every epoch is in the store."""
        self._pending.put(None)
        self._sender.join()
        self._raise_failure()

    def complete(self, *, checkpoint: Path, example: np.ndarray, report: dict, robustness: dict[str, float],
                 figures: dict[str, bytes], dataset: Dataset, registered_model: str) -> tuple[str, bool]:
        """Log the rest of the record: the evaluation (metrics/eval.json's bytes, and its per-class
        figures as a table), the accuracy under distortions (metrics/robustness.json's bytes, and each
        figure as a metric `robustness/<name>`), the plots and the model; register the model. Returns
        (version, became champion). The per-class figures are a table, not metrics: the UI charts every
        metric, and 20 bar charts would come before the per-epoch curves. The robustness figures are
        metrics, so runs sort and filter by them; the UI groups them in a section of their own by the
        prefix before the slash."""
        self.flush()
        patiently = functools.partial(_patiently, self.uri)
        patiently(lambda: mlflow.log_text(json_text(report), "metrics/eval.json"))
        patiently(lambda: mlflow.log_text(json_text(robustness), "metrics/robustness.json"))
        patiently(lambda: mlflow.log_metrics({f"robustness/{name}": v for name, v in robustness.items()}))
        patiently(lambda: mlflow.log_table(evaluation.per_class_table(report), "metrics/per_class.json"))
        with tempfile.TemporaryDirectory() as folder:
            for name, png in figures.items():
                (Path(folder) / name).write_bytes(png)
            patiently(lambda: mlflow.log_artifacts(folder, "plots"))
        model_uri = patiently(lambda: log_model(checkpoint, example))
        patiently(lambda: mlflow.set_tag(MODEL_DIGEST_TAG, digest(checkpoint)))
        return patiently(lambda: register(registered_model, model_uri, report["test_accuracy"], dataset.name))

    def stop(self) -> None:
        """Stop sending (the run failed or was interrupted): what is still queued is dropped."""
        with contextlib.suppress(queue.Full):
            self._pending.put_nowait(None)

    def _send(self) -> None:
        while (metrics := self._pending.get()) is not None:
            try:
                _patiently(self.uri, lambda: self._client.log_batch(self.run_id, metrics=metrics))
            except BaseException as exc:  # handed to the training thread at its next call
                self._failure = exc
                return

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


class NullRun:
    """What the ranks other than 0 of a distributed run log to: nothing; rank 0 records the run."""

    run_id = uri = experiment_id = ""

    def log_epoch(self, record: dict[str, float]) -> None:
        pass

    def backfill(self, records: list[dict[str, float]]) -> None:
        pass


@contextlib.contextmanager
def training_run(params: Params, dataset: Dataset, data_digest: str, device: str, world_size: int,
                 resume_run_id: str | None = None) -> Iterator[Run]:
    """Start this execution's run (or reopen an interrupted one): FINISHED at the end, FAILED on an
    error, KILLED on Ctrl-C or SIGTERM; never left RUNNING."""
    uri = tracking_uri()
    experiment_id = _connect(params.tracking, uri)
    try:
        if resume_run_id and _exists(resume_run_id):
            mlflow.start_run(run_id=resume_run_id, log_system_metrics=True)
        else:
            _start(params, dataset, data_digest, {"device": device, "world_size": str(world_size)}, experiment_id)
    except MlflowException as exc:
        _end("FAILED", uri)  # a run started before the error is not left RUNNING
        raise _refusal(exc, uri, params.tracking) or TrackingError(f"MLflow tracking store {uri}: {brief(exc)}") from None
    run = Run(mlflow.active_run().info.run_id, experiment_id, uri)
    try:
        yield run
    except Exception:
        run.stop()
        _end("FAILED", uri)
        raise
    except BaseException:  # KeyboardInterrupt, and the stages' SIGTERM handler
        run.stop()
        _end("KILLED", uri)
        raise
    _end("FINISHED", uri)


def _start(params: Params, dataset: Dataset, data_digest: str, tags: dict[str, str], experiment_id: str) -> None:
    commit = _git_commit()
    tags = {**tags, "git_commit": commit, "mlflow.source.git.commit": commit, "torch_threads": str(THREADS)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    mlflow.start_run(experiment_id=experiment_id, run_name=_run_name(params, commit), tags=tags,
                     log_system_metrics=True)
    mlflow.log_params(flatten(params))
    _log_dataset(dataset, data_digest)


def _log_dataset(dataset: Dataset, data_digest: str) -> None:
    """The data as an input of the run: the UI shows which files (name and digest) trained it.
    MLflow adds a dataset to an experiment after checking that it is not there yet, so two runs
    starting at once (queued experiments) can both try, and the store refuses one: that one finds
    the dataset on its second try."""
    data = MetaDataset(HTTPDatasetSource(dataset.public_mirrors[0]), name=dataset.name, digest=data_digest)
    try:
        mlflow.log_input(data, context="training")
    except MlflowException:
        mlflow.log_input(data, context="training")


def log_model(checkpoint: Path, example: np.ndarray) -> str:
    """Log the checkpoint as the served model (served_model.py) with its signature and an input
    example; return its URI."""
    return mlflow.pyfunc.log_model(name="model", **_served_model(checkpoint, example)).model_uri


def save_model(checkpoint: Path, folder: Path) -> None:
    """The checkpoint as the same MLflow model, in `folder` rather than a run: what `make serve`
    serves where the store has no champion."""
    mlflow.pyfunc.save_model(str(folder), **_served_model(checkpoint, None))


def _served_model(checkpoint: Path, example: np.ndarray | None) -> dict:
    package = Path(__file__).parent
    return dict(
        python_model=str(package / "served_model.py"),  # a model from code: no pickle
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(package)],  # the model's code travels with it
        signature=SIGNATURE,
        input_example=example,  # MLflow runs the saved model on it as a check
        # Explicit, so MLflow does not infer requirements in a subprocess that may reach the network.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                          f"pandas=={pd.__version__}", f"mlflow=={mlflow.__version__}"],
    )


def register(name: str, model_uri: str, test_accuracy: float, dataset: str) -> tuple[str, bool]:
    """Register the model as a new version and crown the champion (see _crown). Returns the version
    and whether it is the champion now."""
    client = MlflowClient()
    tags = {"test_accuracy": f"{test_accuracy:.6f}", "dataset": dataset}
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Created version ..." lines: the stage says it
        version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    return version, _crown(client, name, dataset) == version


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
        candidates = [v for v in client.search_model_versions(f"name = '{name}'")
                      if int(v.version) >= first and v.tags.get("dataset", "mnist") == dataset]
        best = str(max(candidates, key=lambda v: (float(v.tags.get("test_accuracy", "-1")), -int(v.version))).version)
        if champion is not None and str(champion.version) == best:
            return best
        with contextlib.suppress(MlflowException):  # another registration set the alias first: look again
            client.set_registered_model_alias(name, CHAMPION, best)
    raise TrackingError(f"model {name!r}: the {CHAMPION} alias kept changing under "
                        f"{CROWN_ATTEMPTS} attempts to set it; registrations are racing")


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        return None


def _connect(names: TrackingConfig, uri: str) -> str:
    """Point MLflow at the store and return the experiment id, creating it on first use."""
    mlflow.set_tracking_uri(uri)
    if is_server(uri):
        _check_reachable(uri)
    try:
        found = mlflow.get_experiment_by_name(names.experiment)
        return found.experiment_id if found else _create_experiment(names.experiment, uri)
    except MlflowException as exc:
        raise _refusal(exc, uri, names) or TrackingError(
            f"MLflow tracking store {uri} is not usable: {brief(exc)}") from None


def _check_reachable(uri: str) -> None:
    """A server that is down or unknown fails here, with the reason, before any training."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=1).close()
    except urllib.error.HTTPError:
        pass  # it answered: reachable, whatever it thinks of /health
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} is not reachable: {reason}") from None


def _refusal(exc: MlflowException, uri: str, names: TrackingConfig) -> TrackingError | None:
    """The server's 401 or 403 as a message that says what to do; never the password."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    status = exc.get_http_status_code()
    if status == 401:
        who = f"user {user!r}" if user else "a request without credentials"
        return TrackingError(f"MLflow tracking server {uri} refused {who} (HTTP 401): set MLFLOW_TRACKING_USERNAME "
                             "and MLFLOW_TRACKING_PASSWORD to an account of that server")
    if status == 403:
        return TrackingError(
            f"MLflow tracking server {uri}: user {user!r} lacks the EDIT permission on experiment "
            f"{names.experiment!r} (HTTP 403), so it cannot log runs there; an admin can grant it: "
            f"python -m mnist_pipeline.server grant {user} {names.experiment} EDIT --model {names.registered_model}")
    return None


def _create_experiment(experiment: str, uri: str) -> str:
    # Artifacts go beside the store at the real root; MLflow's default (./mlruns of the current
    # directory) would put them inside DVC's temporary copy, deleted after the experiment. A
    # server keeps them where it was told (--artifacts-destination).
    location = None if is_server(uri) else (project_root() / "mlruns").as_uri()
    # Marks a model-training experiment for MLflow's own tools (the UI's view follows ui_link's URL).
    tags = {"mlflow.experimentKind": "custom_model_development"}
    try:
        return mlflow.create_experiment(experiment, artifact_location=location, tags=tags)
    except MlflowException:  # a parallel queued experiment created it first
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def _exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except MlflowException:
        return False


def _end(status: str, uri: str) -> None:
    if status == "FINISHED":
        _patiently(uri, lambda: mlflow.end_run(status))
        return
    try:  # a failed or interrupted run is marked once, without waiting: the user is waiting for the exit
        mlflow.end_run(status)
    except (MlflowException, OSError):
        pass


def _patiently(uri: str, call: Callable[[], T]) -> T:
    """`call()`, retried while a tracking server does not answer, for up to PATIENCE_S."""
    gave_notice, deadline, pause = False, time.monotonic() + PATIENCE_S, 0.5
    while True:
        try:
            result = call()
        except (MlflowException, OSError) as exc:
            if not (is_server(uri) and _unanswered(exc)):
                raise
            if time.monotonic() > deadline:
                raise TrackingError(f"MLflow tracking server {uri} did not answer for {PATIENCE_S:.0f} s; "
                                    f"the run can be resumed by running the stage again ({brief(exc)})") from None
            if not gave_notice:
                print(f"tracking: {uri} does not answer ({brief(exc, 120)}); training goes on, and the record "
                      f"waits for it (up to {PATIENCE_S:.0f} s)", file=sys.stderr, flush=True)
                gave_notice = True
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        if gave_notice:
            print(f"tracking: {uri} answers again; the record is complete", file=sys.stderr, flush=True)
        return result


def _unanswered(exc: BaseException) -> bool:
    """A server that is down, restarting or overloaded (worth waiting for), not one that said no."""
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() >= 500
    return True  # connection errors


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

