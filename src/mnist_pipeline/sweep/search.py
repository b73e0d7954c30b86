"""Optuna's side of a search: the storage, the study, and a worker that trains trials in-process."""

import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

from mnist_pipeline import device as compute
from mnist_pipeline import engine
from mnist_pipeline.data import Split, holdout, load_split
from mnist_pipeline.errors import DivergenceError, PipelineError, brief
from mnist_pipeline.sweep.spec import Dimension, SpecError, Study
from mnist_pipeline.tracking.search import Recorder

STORAGE_ENV = "MNIST_SWEEP_STORAGE"  # a database URL that workers on several machines share
JOURNAL = "sweeps.journal"  # the default storage: a file at the project root, git-ignored
# A worker's trial is failed this long after its last heartbeat, and retried (database storage only).
HEARTBEAT_S = int(os.environ.get("MNIST_SWEEP_HEARTBEAT_S", "10"))
GRACE_S = 3 * HEARTBEAT_S
MAX_RETRY = 2  # retries of a trial whose worker died
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line of our own per trial instead
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class SweepError(PipelineError):
    """A study that cannot be opened or run."""


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a dead worker's trial again, with its params; the retry inherits its user attrs."""
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def open_storage(url: str | None, root: Path) -> BaseStorage:
    """A database URL (several machines; heartbeats retry a dead worker's trial), else the journal
    file at the project root (several processes of one machine; no database lock errors)."""
    url = url or os.environ.get(STORAGE_ENV)
    if not url:
        return JournalStorage(JournalFileBackend(str(root / JOURNAL)))
    shown = _redacted(url)
    kwargs: dict[str, Any] = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    from sqlalchemy.exc import IntegrityError, ProgrammingError  # with a database only: 0.3 s to import

    def storage() -> RDBStorage:
        return RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry_stale,
        )

    try:
        try:
            return storage()
        except (IntegrityError, ProgrammingError):
            # Workers that meet a new database at once all create Optuna's tables; the losers look again.
            time.sleep(1)
            return storage()
    except Exception as exc:  # SQLAlchemy's and the driver's errors: refused, unreachable, unknown URL
        said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise SweepError(f"study storage {shown} cannot be used: {brief(said[0] if said else exc)}") from None


class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random draws for a trial are seeded by the study's seed and the trial's number: one
    worker repeats a study exactly, and workers in parallel, here or on other machines, never draw
    alike (with one seed each, every worker would start with the same random trials). It reseeds
    TPE's generators, private in Optuna 5.0 (pinned; tests/test_sweep.py would see a change)."""

    def __init__(self, seed: int):
        # constant_liar: parallel workers do not all draw next to the same pending trial.
        super().__init__(seed=seed, constant_liar=True)
        self.study_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = (self.study_seed * 1_000_003 + trial.number) % 2**32
        self._rng.rng.seed(seed)
        self._random_sampler._rng.rng.seed(seed)
        super().before_trial(study, trial)


def open_study(spec: Study, storage: BaseStorage) -> optuna.Study:
    """The study named after `spec`, created on first use; refused if it was made with other settings."""
    pruners: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.epochs),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        "none": optuna.pruners.NopPruner,
    }
    sampler = TrialSeededTPE(spec.seed)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        pruner=pruners[spec.pruner](),
        direction="maximize",
        load_if_exists=True,
    )
    made_with = study.user_attrs.get("spec")
    if made_with is None:
        study.set_user_attr("spec", spec.fingerprint())
    elif made_with != spec.fingerprint():
        raise SpecError(
            f"study {spec.name} in this storage was made with other settings ({made_with}); "
            f"its trials would not compare: delete the study or use another --storage"
        )
    return study


def load_study(name: str, storage: BaseStorage) -> optuna.Study:
    """A study that exists, for reading its trials."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SweepError(
            f"no study {name!r} in the study storage yet: run it first (python -m mnist_pipeline.sweep run {name})"
        ) from None


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def pending(spec: Study, study: optuna.Study) -> bool:
    """Work left: fewer finished trials than the study asks for, or a dead worker's trial queued again."""
    return len(finished(study)) < spec.trials or bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def worker_name(pid: int) -> str:
    """How trials name the process that runs them (user attr `worker`)."""
    return f"{socket.gethostname()}:{pid}"


def suggest(trial: Trial, key: str, dimension: Dimension) -> Any:
    """A trial's value for `key`. Choices that are lists (layer widths) are offered to Optuna as
    their JSON text: its categorical values must be plain scalars."""
    if dimension.kind == "choices":
        labels = [json.dumps(c) if isinstance(c, list) else c for c in dimension.choices]
        return dimension.choices[labels.index(trial.suggest_categorical(key, labels))]
    if dimension.kind == "int":
        return trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)


def validation_data(spec: Study, data_dir: Path, device: torch.device) -> tuple[Split, Split]:
    """The training split less `spec.validation` seeded images, and those images. Only the training
    files are read: the test set plays no part in a search."""
    train, val = holdout(load_split(data_dir, train=True), spec.validation, spec.seed)
    return train.to(device), val.to(device)


class Worker:
    """Runs a study's trials in this process until it has spec.trials finished ones."""

    def __init__(self, spec: Study, study: optuna.Study, base: dict, data_dir: Path, recorder: Recorder):
        self.spec, self.study, self.base, self.recorder = spec, study, base, recorder
        self.device = compute.setup()  # one thread
        self.train, self.val = validation_data(spec, data_dir, self.device)
        self.name = worker_name(os.getpid())

    def run(self) -> None:
        while pending(self.spec, self.study):
            self.study.optimize(self._objective, n_trials=1, catch=(DivergenceError,), callbacks=[self._progress])
        self._wait_for_the_others()

    def _objective(self, trial: Trial) -> float:
        drawn = {key: suggest(trial, key, dim) for key, dim in self.spec.space.items()}
        params = self.spec.trial_params(self.base, drawn)
        trial.set_user_attr("worker", self.name)
        trial.set_user_attr("overrides", {**self.spec.params, **drawn, "train.epochs": self.spec.epochs})
        with self.recorder.trial(trial, params) as run:
            training = engine.Training.create(params, len(self.train), self.device)
            value = 0.0
            for record in engine.fit(training, self.train, self.val, params.train):
                epoch, value = int(record["epoch"]), record["test_accuracy"]
                run.log_epoch(
                    {
                        "epoch": epoch,
                        "train_loss": record["train_loss"],
                        "train_accuracy": record["train_accuracy"],
                        "val_loss": record["test_loss"],
                        "val_accuracy": value,
                    }
                )
                trial.set_user_attr("epochs_trained", epoch)
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"at epoch {epoch}")
            return value

    def _progress(self, study: optuna.Study, trial: FrozenTrial) -> None:
        values = list(trial.intermediate_values.values())
        value = trial.value if trial.value is not None else (values[-1] if values else None)
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        drawn = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        best = study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None
        print(
            f"trial {trial.number} {trial.state.name.lower()}: val_accuracy "
            f"{'-' if value is None else f'{value:.4f}'} after {trial.user_attrs.get('epochs_trained', 0)} epochs "
            f"({seconds:.1f} s) {drawn}" + (f"; best: trial {best.number}, {best.value:.4f}" if best else ""),
            flush=True,
        )

    def _wait_for_the_others(self) -> None:
        """A dead worker's trial goes stale only when somebody looks after the grace period: while
        other workers' trials run, look again, and run the retries that the looks queue."""
        if not isinstance(self.study._storage, RDBStorage):
            return  # a journal has no heartbeats: the launcher retires its dead workers' trials
        while self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(HEARTBEAT_S)
            optuna.storages.fail_stale_trials(self.study)
            while self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                self.study.optimize(self._objective, n_trials=1, catch=(DivergenceError,), callbacks=[self._progress])


def retire(study: optuna.Study, worker: str) -> list[int]:
    """Fail and queue again the running trials of a worker that died (for a journal, which has no
    heartbeats); return their numbers."""
    dead = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("worker") == worker]
    for trial in dead:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        retry_stale(study, study.get_trials(deepcopy=False)[trial.number])
    return [t.number for t in dead]


def _redacted(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: RDBStorage will say so
        return url
