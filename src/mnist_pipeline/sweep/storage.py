"""Optuna's side of a search: the storage, the study made or joined in it, its state, a dead worker's trials."""

import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.errors import PipelineError, brief
from mnist_pipeline.sweep.spec import SpecError, StudySpec

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


def open_study(spec: StudySpec, storage: BaseStorage) -> optuna.Study:
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


def pending(spec: StudySpec, study: optuna.Study) -> bool:
    """Work left: fewer finished trials than the study asks for, or a dead worker's trial queued again."""
    return len(finished(study)) < spec.trials or bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def worker_name(pid: int) -> str:
    """How trials name the process that runs them (user attr `worker`)."""
    return f"{socket.gethostname()}:{pid}"


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
