"""Optuna's side of a search: the storage, the study made or joined in it, its state, a dead worker's trials."""

import functools
import hashlib
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.errors import PipelineError, brief, redacted
from mnist_pipeline.sweep.spec import SpecError, StudySpec

STORAGE_ENV = "MNIST_SWEEP_STORAGE"  # a database URL that workers on several machines share
JOURNAL = "sweeps.journal"  # the default storage: a file at the project root, git-ignored
# A worker's trial is failed this long after its last heartbeat, and retried (database storage only).
HEARTBEAT_S = int(os.environ.get("MNIST_SWEEP_HEARTBEAT_S", "10"))
GRACE_S = 3 * HEARTBEAT_S
MAX_RETRY = 2  # retries of a trial whose worker died
MAX_DIVERGED = 10  # trials in a row whose training diverged: the search stops, its space is at fault
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BASE_ATTR = "base"  # the study's user attr: the params.yaml values its trials were trained on

# One line of our own per trial instead, failed ones included (Optuna warns of each with its traceback).
optuna.logging.set_verbosity(optuna.logging.ERROR)
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
    shown = redacted(url)
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


def open_study(spec: StudySpec, storage: BaseStorage, base: dict[str, Any]) -> optuna.Study:
    """The study named after `spec`, created on first use; refused if it was made with other settings,
    or its trials on other params.yaml values than `base` (spec.base)."""
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
    if BASE_ATTR not in study.user_attrs:  # a new study, or one made before bases were recorded
        study.set_user_attr(BASE_ATTR, base)
    check_base(study, base)
    return study


def check_base(study: optuna.Study, base: dict[str, Any]) -> None:
    """Refuse to add to, or promote from, a study whose trials were trained on other params.yaml values
    (another dataset, augmentation, `dvc exp apply` of another experiment): one line naming them."""
    made_on = study.user_attrs.get(BASE_ATTR)
    if made_on is None:
        return
    changed = sorted(k for k in made_on.keys() | base.keys() if made_on.get(k) != base.get(k))
    if changed:
        said = "; ".join(
            f"{k} is {base.get(k, '(none)')} here, {made_on.get(k, '(none)')} in the study" for k in changed
        )
        raise SpecError(
            f"study {study.study_name} in this storage was trained on other params.yaml values ({brief(said)}); "
            "its trials would not compare: restore those values, delete the study or use another --storage"
        )


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


def diverged_in_a_row(study: optuna.Study) -> int:
    """How many of the study's last trials diverged, one after the other (running and waiting ones aside)."""
    count = 0
    for trial in reversed(study.get_trials(deepcopy=False)):
        if trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if trial.state != TrialState.FAIL or "diverged" not in trial.user_attrs:
            break
        count += 1
    return count


def stop_if_diverging(study: optuna.Study) -> None:
    diverged = diverged_in_a_row(study)
    if diverged >= MAX_DIVERGED:
        last = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1]
        raise SweepError(
            f"study {study.study_name}: its last {diverged} trials all diverged ({last.user_attrs['diverged']}); "
            "the search stops: narrow sweep.yaml's space (lower learning rates) and run it again"
        )


def worker_name(pid: int) -> str:
    """How trials name the process that runs them (user attr `worker`): its host, its pid, and where that
    pid means this process (this boot of this machine, this pid namespace): pids of two containers, or
    of two boots, never mix."""
    return f"{socket.gethostname()}:{pid}:{_place()}"


@functools.cache
def _place() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pids = os.readlink("/proc/self/ns/pid")
    except OSError:  # no Linux /proc: a place of its own, so no other process judges this one by pid
        return uuid.uuid4().hex[:12]
    return hashlib.sha256(f"{boot} {pids}".encode()).hexdigest()[:12]


def retire(study: optuna.Study, worker: str) -> list[int]:
    """Fail and queue again the running trials of a worker that died (for a journal, which has no
    heartbeats); return their numbers."""
    return _fail_and_retry(
        study, [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("worker") == worker]
    )


def retire_stale(study: optuna.Study) -> list[int]:
    """Fail and queue again the running trials that nobody runs: a worker of this place that is gone
    (the OOM killer's, or a launcher's that died with it), and a trial without a worker after the grace
    period (its worker died between drawing it and starting it, before Optuna's first heartbeat, so
    heartbeats never find it stale). Return their numbers."""
    stale = []
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        host_pid_place = trial.user_attrs.get("worker", "").split(":")
        if len(host_pid_place) == 3:
            _, pid, place = host_pid_place
            if place == _place() and not _alive(int(pid), trial.datetime_start):
                stale.append(trial)
        elif not host_pid_place[0] and trial.datetime_start:
            if time.time() - trial.datetime_start.timestamp() > GRACE_S:
                stale.append(trial)
    return _fail_and_retry(study, stale)


def _fail_and_retry(study: optuna.Study, trials: list[FrozenTrial]) -> list[int]:
    retried = []
    for trial in trials:
        try:  # Optuna's heartbeat check, or another worker, may fail it first: then they queue the retry
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            continue
        retry_stale(study, study.get_trials(deepcopy=False)[trial.number])
        retried.append(trial.number)
    return retried


def _alive(pid: int, since: datetime | None) -> bool:
    """Is process `pid` alive here, and older than `since` (a pid used again later is another process)?"""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    # The boot in today's wall-clock time, to the tick: /proc/stat's btime is whole seconds, and a
    # pid started 1.5 s after the trial could look older than it.
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: clock ticks after boot
    # Half a second's slack, towards alive: a live worker's trial is never failed under it.
    return fields[0] != "Z" and (since is None or started <= since.timestamp() + 0.5)
