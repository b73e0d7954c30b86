"""One complete MLflow record per execution of the train stage, never left RUNNING.

The train stage records everything itself (params, per-epoch metrics, the evaluation, the plots,
the model and its registered version). DVC skips evaluate and plot whenever their inputs are
unchanged, a retrained model byte-identical to the committed one for instance, so a record
assembled by three stages would depend on which of them DVC chose to run.
"""

import contextlib
import functools
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline import cli
from mnist_pipeline.config import Params, flatten
from mnist_pipeline.data.catalog import Dataset
from mnist_pipeline.errors import TrackingError, brief
from mnist_pipeline.files import digest
from mnist_pipeline.tracking import patience, registry, store
from mnist_pipeline.tracking.env import git_commit, tracking_uri
from mnist_pipeline.training.device import THREADS

# The stages print their own one-line summaries; MLflow's INFO chatter would only repeat them, and
# the system-metrics monitor warns at every start on a machine without a GPU. (After mlflow's
# import, which sets its loggers' levels.)
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)

MODEL_DIGEST_TAG = "model_sha256"  # ties a run to the exact models/model.pt it produced
CARD = "model_card.md"  # the run's artifact; its registered version's description is the same text


class Run:
    """An open run of the train stage. Epochs go to the store from a background thread, in order,
    and wait there while a tracking server is unreachable, so training never stalls on the store and
    a server restart loses nothing."""

    def __init__(self, run_id: str, experiment_id: str, uri: str):
        self.run_id, self.experiment_id, self.uri = run_id, experiment_id, uri
        self._client = MlflowClient(uri)
        self._pending: queue.Queue[list[Metric] | None] = queue.Queue()
        self._stopped = threading.Event()
        self._failure: BaseException | None = None
        self._sender = threading.Thread(target=self._send, name="mlflow-epochs", daemon=True)
        self._sender.start()

    def log_epoch(self, record: dict[str, float]) -> None:
        self._raise_failure()
        now, step = int(time.time() * 1000), int(record["epoch"])
        self._pending.put([Metric(k, v, now, step) for k, v in record.items() if k != "epoch"])

    def backfill(self, records: list[dict[str, float]]) -> None:
        """Send the epochs of a resumed run that its record lacks (an interruption can lose the last)."""
        logged = {
            m.step
            for m in patience.patiently(self.uri, lambda: self._client.get_metric_history(self.run_id, "test_accuracy"))
        }
        for record in records:
            if record["epoch"] not in logged:
                self.log_epoch(record)

    def flush(self) -> None:
        """Wait until every epoch is in the store."""
        self._pending.put(None)
        self._sender.join()
        self._raise_failure()

    def complete(
        self,
        *,
        checkpoint: Path,
        exported: Path,
        example: np.ndarray,
        evaluation: dict[str, str],
        test_accuracy: float,
        figures: dict[str, bytes],
        card: str,
        dataset: Dataset,
        registered_model: str,
    ) -> tuple[str, bool]:
        """Log the rest of the record: the evaluation (the JSON files of metrics/ by name, byte for byte:
        the headline, the per-class figures, the accuracy under distortions), the plots, the model card
        and the model (`checkpoint` and its ONNX export); register the model, the card its version's
        description. Returns (version, became champion). Only the per-epoch scores are metrics: the UI
        charts every metric, and 13 robustness bar charts came before the per-epoch curves, in a
        section of their own. Ctrl-C and SIGTERM wait until it is done (cli.held)."""
        with cli.held():
            self.flush()
            patiently = functools.partial(patience.patiently, self.uri)
            for name, text in evaluation.items():
                patiently(functools.partial(mlflow.log_text, text, f"metrics/{name}"))
            with tempfile.TemporaryDirectory() as folder:
                for name, png in figures.items():
                    (Path(folder) / name).write_bytes(png)
                patiently(lambda: mlflow.log_artifacts(folder, "plots"))
            patiently(lambda: mlflow.log_text(card, CARD))
            model_uri = patiently(lambda: registry.log_model(checkpoint, exported, example))
            patiently(lambda: mlflow.set_tag(MODEL_DIGEST_TAG, digest(checkpoint)))
            return patiently(lambda: registry.register(registered_model, model_uri, test_accuracy, dataset.name, card))

    def chosen_by(self, params: Params) -> str | None:
        """The search that chose this run's params, in words, when the run is a study's winner (the DVC
        experiment STUDY-best that `sweep promote` or its recipe runs) and the store holds that study."""
        name = os.environ.get("DVC_EXP_NAME", "")
        if not name.endswith("-best"):
            return None
        study = name.removesuffix("-best")
        experiment = patience.patiently(
            self.uri, lambda: self._client.get_experiment_by_name(search_experiment(params))
        )
        if experiment is None:
            return None
        search = f"tags.sweep_study = '{study}' and tags.sweep_parent = 'true'"
        found = patience.patiently(self.uri, lambda: self._client.search_runs([experiment.experiment_id], search))
        if not found or "best_val_accuracy" not in found[0].data.metrics:
            return None
        tags, metrics = found[0].data.tags, found[0].data.metrics
        return (
            f"The search `{study}` (sweep.yaml): its trial {tags.get('sweep_best_trial', '?')} reached validation "
            f"accuracy {metrics['best_val_accuracy']:.4f} on a split held out of the training set; its params "
            "were then trained here on the whole training set."
        )

    def stop(self) -> None:
        """Stop sending (the run failed or was interrupted): what is still queued is dropped, and an
        epoch waiting for the server stops waiting."""
        self._stopped.set()
        self._pending.put(None)

    def _send(self) -> None:
        while not self._stopped.is_set() and (metrics := self._pending.get()) is not None:
            try:
                patience.patiently(
                    self.uri, lambda: self._client.log_batch(self.run_id, metrics=metrics), stop=self._stopped
                )
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
def lifetime(
    uri: str,
    experiment_id: str,
    start: Callable[[], str],
    *,
    state_tag: str | None = None,
    finishes: tuple[type[BaseException], ...] = (),
) -> Iterator[Run]:
    """Own a run's whole life: `start()` opens it (and returns its id), then the block records into it.
    It ends FINISHED when the block ends or raises one of `finishes` (a pruned trial), FAILED on an error,
    KILLED on Ctrl-C or SIGTERM; never left RUNNING, a failed start included. `state_tag`, if given,
    names a tag that says which: complete, pruned, failed or interrupted. Ctrl-C and SIGTERM wait while
    it starts and ends the run (cli.held): a run half made or half closed is not left RUNNING."""
    run: Run | None = None
    try:
        with cli.held():
            try:
                run = Run(start(), experiment_id, uri)
            except Exception:
                end("FAILED", uri)  # a run started before the error is not left RUNNING
                raise
    except KeyboardInterrupt:  # one that waited for the start: the run, made, ends at once
        if run:
            run.stop()
        end("KILLED", uri)
        raise
    try:
        yield run
    except finishes:
        _close(run, "pruned", "FINISHED", state_tag)
        raise
    except Exception:
        _close(run, "failed", "FAILED", state_tag)
        raise
    except BaseException:  # KeyboardInterrupt, and cli's Terminated (SIGTERM)
        _close(run, "interrupted", "KILLED", state_tag)
        raise
    _close(run, "complete", "FINISHED", state_tag)


def _close(run: Run, state: str, status: str, state_tag: str | None) -> None:
    with cli.held():
        if status == "FINISHED":
            run.flush()
        else:
            run.stop()
        if state_tag:
            with contextlib.suppress(Exception):  # a failing run is marked once, without waiting
                mlflow.set_tag(state_tag, state)
        end(status, run.uri)


@contextlib.contextmanager
def training_run(
    params: Params,
    dataset: Dataset,
    data_digest: str,
    device: str,
    world_size: int,
    precision: str,
    resume_run_id: str | None = None,
) -> Iterator[Run]:
    """This execution's run of the train stage (or the interrupted one, reopened), owned by `lifetime`;
    tagged with the precision it trained in, which is train.precision where the device has it."""
    patience.limit_s()  # a bad setting stops the stage before it starts a run
    uri = tracking_uri()
    names = params.tracking
    experiment_id = store.connect(uri, names.experiment, names.registered_model)

    def start() -> str:
        try:
            if resume_run_id and _exists(resume_run_id):
                return mlflow.start_run(run_id=resume_run_id, log_system_metrics=True).info.run_id
            tags = {"device": device, "world_size": str(world_size), "precision": precision}
            return _start(params, dataset, data_digest, tags, experiment_id).info.run_id
        except MlflowException as exc:
            raise store.refusal(exc, uri, names.experiment, names.registered_model) or TrackingError(
                f"MLflow tracking store {uri}: {brief(exc)}"
            ) from None

    with lifetime(uri, experiment_id, start) as run:
        yield run


def search_experiment(params: Params) -> str:
    """Searches have an experiment of their own beside the pipeline's runs: their runs score the
    validation set, the pipeline's the test set, and their charts should not mix."""
    return f"{params.tracking.experiment}-search"


def _start(
    params: Params, dataset: Dataset, data_digest: str, tags: dict[str, str], experiment_id: str
) -> mlflow.ActiveRun:
    commit = git_commit()
    tags = {**tags, "git_commit": commit, "mlflow.source.git.commit": commit, "torch_threads": str(THREADS)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    active = mlflow.start_run(
        experiment_id=experiment_id, run_name=_run_name(params, commit), tags=tags, log_system_metrics=True
    )
    mlflow.log_params(flatten(params))
    _log_dataset(dataset, data_digest)
    return active


def _log_dataset(dataset: Dataset, data_digest: str) -> None:
    """The data as an input of the run: the UI shows which files (name and digest) trained it.
    MLflow adds a dataset to an experiment after checking that it is not there yet, so two runs
    starting at once (queued experiments) can both try, and the store refuses one: that one finds
    the dataset on its second try."""
    # MLflow's Dataset is no ABC, and MetaDataset leaves its `profile` to it: None.
    data = MetaDataset(  # type: ignore[abstract]
        HTTPDatasetSource(dataset.public_mirrors[0]), name=dataset.name, digest=data_digest
    )
    try:
        mlflow.log_input(data, context="training")
    except MlflowException:
        mlflow.log_input(data, context="training")


def _exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except MlflowException:
        return False


def end(status: str, uri: str) -> None:
    """End the active run: FINISHED patiently; FAILED or KILLED at once."""
    if status == "FINISHED":
        patience.patiently(uri, lambda: mlflow.end_run(status))
        return
    try:  # a failed or interrupted run is marked once, without waiting: the user is waiting for the exit
        mlflow.end_run(status)
    except (MlflowException, OSError):
        pass


def _run_name(params: Params, commit: str) -> str:
    who = os.environ.get("DVC_EXP_NAME") or commit[:7]
    t = params.train
    return f"{who} lr={t.lr:g} bs={t.batch_size} ep={t.epochs} {t.optimizer}"
