"""A search's worker: trains a study's trials in this process, each scored on the validation split."""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from mnist_pipeline import cli
from mnist_pipeline.config import Params
from mnist_pipeline.data.splits import Split, holdout, load_split
from mnist_pipeline.errors import DivergenceError, brief
from mnist_pipeline.sweep.spec import Dimension, StudySpec
from mnist_pipeline.sweep.storage import HEARTBEAT_S, pending, retire_stale, stop_if_diverging, worker_name
from mnist_pipeline.tracking.study_runs import Recorder
from mnist_pipeline.training import device as compute
from mnist_pipeline.training import engine


def suggest(trial: Trial, key: str, dimension: Dimension) -> Any:
    """A trial's value for `key`. Choices that are lists (layer widths) are offered to Optuna as
    their JSON text: its categorical values must be plain scalars."""
    if dimension.kind == "choices":
        labels = [json.dumps(c) if isinstance(c, list) else c for c in dimension.choices]
        return dimension.choices[labels.index(trial.suggest_categorical(key, labels))]
    if dimension.kind == "int":
        return trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)


def validation_data(spec: StudySpec, data_dir: Path, device: torch.device) -> tuple[Split, Split]:
    """The training split less `spec.validation` seeded images, and those images. Only the training
    files are read: the test set plays no part in a search."""
    train, val = holdout(load_split(data_dir, train=True), spec.validation, spec.seed)
    return train.to(device), val.to(device)


def validation_epochs(params: Params, train: Split, val: Split) -> tuple[engine.Training, Iterator[dict[str, float]]]:
    """A fresh, seeded training of `params` on `train`, and its epochs, each scored on `val`
    (val_loss, val_accuracy): a trial of the search, and what the benches train again."""
    training = engine.Training.create(params, len(train), train.images.device)
    return training, engine.fit(training, train, val, params.train, split="val")


class Worker:
    """Runs a study's trials in this process until it has spec.trials finished ones."""

    def __init__(self, spec: StudySpec, study: optuna.Study, base: dict, data_dir: Path, recorder: Recorder):
        self.spec, self.study, self.base, self.recorder = spec, study, base, recorder
        self.device = compute.setup()  # one thread
        self.train, self.val = validation_data(spec, data_dir, self.device)
        self.name = worker_name(os.getpid())

    def run(self) -> None:
        """Ctrl-C and SIGTERM are taken between trials and while an epoch computes, never inside a call
        to Optuna or MLflow (cli.held): no trial or run is left RUNNING, none finished is failed."""
        with cli.held():
            while self._more():
                self._one_trial()
            self._wait_for_the_others()

    def _more(self) -> bool:
        cli.checkpoint()
        stop_if_diverging(self.study)
        return pending(self.spec, self.study)

    def _one_trial(self) -> None:
        self.study.optimize(self._objective, n_trials=1, catch=(DivergenceError,), callbacks=[self._progress])

    def _objective(self, trial: Trial) -> float:
        drawn = {key: suggest(trial, key, dim) for key, dim in self.spec.space.items()}
        params = self.spec.trial_params(self.base, drawn)
        trial.set_user_attr("worker", self.name)
        trial.set_user_attr("overrides", {**self.spec.params, **drawn, "train.epochs": self.spec.epochs})
        try:
            with self.recorder.trial(trial, params) as run:
                _, epochs = validation_epochs(params, self.train, self.val)
                value = 0.0
                for record in cli.interruptible(epochs):
                    epoch, value = int(record["epoch"]), record["val_accuracy"]
                    run.log_epoch(record)
                    trial.set_user_attr("epochs_trained", epoch)
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"at epoch {epoch}")
                return value
        except DivergenceError as exc:  # counted: a space where every trial diverges stops the search
            trial.set_user_attr("diverged", brief(exc))
            raise

    def _progress(self, study: optuna.Study, trial: FrozenTrial) -> None:
        values = list(trial.intermediate_values.values())
        value = trial.value if trial.value is not None else (values[-1] if values else None)
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        drawn = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        best = study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None
        print(
            f"trial {trial.number} {trial.state.name.lower()}: val_accuracy "
            f"{'-' if value is None else f'{value:.4f}'} after {trial.user_attrs.get('epochs_trained', 0)} epochs "
            f"({seconds:.1f} s) {drawn}"
            + (f"; {trial.user_attrs['diverged']}" if "diverged" in trial.user_attrs else "")
            + (f"; best: trial {best.number}, {best.value:.4f}" if best else ""),
            flush=True,
        )

    def _wait_for_the_others(self) -> None:
        """A dead worker's trial goes stale only when somebody looks after the grace period: while
        other workers' trials run, look again, and run the retries that the looks queue. A trial that
        never had a heartbeat is failed by retire_stale: the wait ends."""
        if isinstance(self.study._storage, JournalStorage):  # (a database's is wrapped in Optuna's cache)
            return  # a journal has no heartbeats: the launcher retires its dead workers' trials
        while self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            with cli.released():
                time.sleep(HEARTBEAT_S)
            optuna.storages.fail_stale_trials(self.study)
            self.recorder.fail(retire_stale(self.study))
            while self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                cli.checkpoint()
                self._one_trial()
