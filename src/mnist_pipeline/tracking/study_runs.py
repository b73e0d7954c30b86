"""MLflow's side of a search: a parent run per study holding its figures and best params, a child run per trial."""

import contextlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import mlflow
import optuna
import yaml
from mlflow.entities import Param, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, Trial, TrialState

from mnist_pipeline.config import Params, flatten, nested
from mnist_pipeline.tracking import env, store
from mnist_pipeline.tracking.run import Run, lifetime, search_experiment

CANDIDATE = "mlflow_parent_run:"  # study user attrs, one per parent run made for it: its start time (ms)
PARENT_ATTR = "mlflow_parent_run"  # the one parent of a study made before candidates were recorded
RUN_ATTR = "mlflow_run_id"  # a trial's user attr naming its run; a retry inherits its dead trial's
SETTLE_ENV = "MNIST_SWEEP_SETTLE_S"  # the settle time below, 2 s by default


class Recorder:
    """Opens the study's parent run (elected among those its first workers made) and records trials under it."""

    def __init__(self, study: optuna.Study, settings: dict[str, Any], params: Params):
        """`settings`: the study's own (trials, epochs, ...), the parent run's params."""
        self.study, self.name, self.uri = study, study.study_name, env.tracking_uri()
        self.experiment_id = store.connect(self.uri, search_experiment(params), params.tracking.registered_model)
        self.client = MlflowClient(self.uri)
        self.parent_id = self._elect(settings)

    def _elect(self, settings: dict[str, Any]) -> str:
        """The study's parent run: the earliest made for it (start time, then id), whoever looks. Workers
        that find none each make one, record it in the study, and look again once every such record is
        written: all then take the same, and the others delete their own."""
        made = self._candidates()
        if made:
            return made[0]
        run = self.client.create_run(
            self.experiment_id, run_name=f"search {self.name}", tags={"sweep_study": self.name, "sweep_parent": "true"}
        )
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in settings.items()])
        self.study.set_user_attr(CANDIDATE + run.info.run_id, run.info.start_time)
        time.sleep(settle_s())
        parent = self._candidates()[0]
        if parent != run.info.run_id:
            self._discard(run.info.run_id)
        return parent

    def _candidates(self) -> list[str]:
        """The parent runs made for the study, earliest first."""
        attrs = self.study.user_attrs
        made = [(when, key.removeprefix(CANDIDATE)) for key, when in attrs.items() if key.startswith(CANDIDATE)]
        made += [(0, attrs[PARENT_ATTR])] if PARENT_ATTR in attrs else []
        return [run_id for _, run_id in sorted(made)]

    def _gather(self) -> None:
        """Children of another parent (its maker was slower than settle_s() to record it, and
        took it alone) move to the elected one, and that other parent is deleted."""
        self.parent_id, *others = self._candidates()
        for other in others:
            strays = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{other}'", run_view_type=ViewType.ALL
            )
            for child in strays:
                self.client.set_tag(child.info.run_id, "mlflow.parentRunId", self.parent_id)
            if self.client.get_run(other).info.lifecycle_stage == "active":
                self._discard(other)

    def _discard(self, run_id: str) -> None:
        """A parent run that lost the election: ended (none is left RUNNING, deleted or not), then deleted;
        one that another worker's gather deleted meanwhile is left as it is."""
        try:
            self.client.set_terminated(run_id, "KILLED")
            self.client.delete_run(run_id)
        except MlflowException:
            if self.client.get_run(run_id).info.lifecycle_stage == "active":
                raise

    @contextlib.contextmanager
    def trial(self, trial: Trial, params: Params) -> Iterator[Run]:
        """A child run for `trial`, owned by tracking.run.lifetime: FINISHED when complete or pruned
        (tag sweep_state says which), FAILED on an error, KILLED on Ctrl-C."""

        def start() -> str:
            inherited = trial.user_attrs.get(RUN_ATTR)
            mlflow.set_tracking_uri(self.uri)
            active = mlflow.start_run(
                experiment_id=self.experiment_id,
                run_name=f"{self.name} trial {trial.number}",
                tags={"mlflow.parentRunId": self.parent_id, "sweep_study": self.name, "sweep_trial": str(trial.number)},
                log_system_metrics=True,
            )
            trial.set_user_attr(RUN_ATTR, active.info.run_id)
            if inherited:
                self._mark_retried(inherited, trial.number)
            mlflow.log_params(flatten(params))
            return active.info.run_id

        with lifetime(
            self.uri, self.experiment_id, start, state_tag="sweep_state", finishes=(optuna.TrialPruned,)
        ) as run:
            yield run

    def _mark_retried(self, run_id: str, retry: int) -> None:
        """The run of a trial whose worker died: FAILED, and tagged with the trial that retried it."""
        self.client.set_tag(run_id, "sweep_retried_by", str(retry))
        self._failed(run_id)

    def fail(self, numbers: list[int]) -> None:
        """The runs of trials failed because their worker is gone: FAILED now, not when a retry starts."""
        trials = self.study.get_trials(deepcopy=False)
        for number in numbers:
            if RUN_ATTR in trials[number].user_attrs:
                self._failed(trials[number].user_attrs[RUN_ATTR])

    def _failed(self, run_id: str) -> None:
        self.client.set_tag(run_id, "sweep_state", "failed")
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.client.set_terminated(run_id, "FAILED")

    def end(self, status: str) -> None:
        """End the parent run KILLED or FAILED: a search stopped by a signal or an error (a later `run` reopens it)."""
        with contextlib.suppress(MlflowException):
            self.client.set_terminated(self.parent_id, status)

    def summarize(self) -> None:
        """The parent run's record of the study so far: figures, counts, and the best trial's params
        as a params.yaml fragment; the parent ends FINISHED (a later `run` reopens it)."""
        while True:
            self._gather()
            try:
                self._summary()
                return
            except MlflowException:
                # A slower worker's earlier parent turned up and its gather deleted ours: look again.
                # Each look moves to an earlier parent, so this ends.
                if self.client.get_run(self.parent_id).info.lifecycle_stage == "active":
                    raise

    def _summary(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts = {state: sum(t.state == state for t in trials) for state in TrialState}
        metrics = {
            "trials_complete": counts[TrialState.COMPLETE],
            "trials_pruned": counts[TrialState.PRUNED],
            "trials_failed": counts[TrialState.FAIL],
            "epochs_trained": sum(t.user_attrs.get("epochs_trained", 0) for t in trials),
        }
        best = best_trial(self.study)
        if best is not None:
            metrics["best_val_accuracy"] = float(best.value or 0.0)
            self.client.log_text(self.parent_id, best_params_yaml(best), "best_params.yaml")
            try:
                self.client.set_tag(self.parent_id, "sweep_best_trial", str(best.number))
            except MlflowException:  # workers summarising at once: MLflow checks, then inserts; look again
                self.client.set_tag(self.parent_id, "sweep_best_trial", str(best.number))
        for key, value in metrics.items():
            self.client.log_metric(self.parent_id, key, value)
        with tempfile.TemporaryDirectory() as folder:
            for name, png in figures(self.study).items():
                (Path(folder) / name).write_bytes(png)
            self.client.log_artifacts(self.parent_id, folder, "figures")
        self.client.set_terminated(self.parent_id, "FINISHED")

    def link(self) -> str:
        """Where the study's runs are: its experiment's charts (a server's), or how to see them."""
        if env.is_server(self.uri):
            return env.ui_link(self.uri, self.experiment_id)
        return f"`make ui`, then experiment {self.experiment_id} (parent run {self.parent_id})"


def settle_s() -> float:
    """How long a worker that made a parent run waits before it looks again: longer than making one and
    recording it in the study takes (longer for a slow database, 0 where one process alone starts it)."""
    return float(os.environ.get(SETTLE_ENV, "2"))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def overrides(trial: FrozenTrial) -> dict[str, Any]:
    """The dotted params.yaml values that made `trial`, fixed and drawn, and its epoch budget."""
    return dict(trial.user_attrs["overrides"])


def best_params_yaml(trial: FrozenTrial) -> str:
    """The trial's values as a params.yaml fragment, nested as the file is."""
    header = f"# Trial {trial.number}: validation accuracy {trial.value:.4f}\n"
    return header + yaml.safe_dump(nested(overrides(trial)), sort_keys=True)


def figures(study: optuna.Study) -> dict[str, bytes]:
    """Optuna's plots of the study as PNGs: history, importances, parallel coordinates, slices.
    A plot that the study cannot support yet (importances need two complete trials) is left out."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend: no display here
    from optuna.visualization import matplotlib as vis

    plots: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history.png": vis.plot_optimization_history,
        "param_importances.png": vis.plot_param_importances,
        "parallel_coordinate.png": vis.plot_parallel_coordinate,
        "slice.png": vis.plot_slice,
    }
    pngs = {}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # e.g. importances that a few alike trials cannot tell apart
                warnings.simplefilter("ignore")
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 10), max(figure.get_size_inches()[1], 6))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(figure)
        pngs[name] = buffer.getvalue()
    return pngs
