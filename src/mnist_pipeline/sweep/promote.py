"""`sweep promote`: the best trial's params become the DVC experiment STUDY-best, trained by the pipeline
on the whole training set, recorded and registered like any run, then scored on the test set."""

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from mnist_pipeline import cli
from mnist_pipeline.sweep.storage import SweepError
from mnist_pipeline.tracking.study_runs import best_trial, overrides

METRICS = "metrics/eval.json"


def promote(study: optuna.Study, root: Path) -> float:
    """Run the winner as a DVC experiment in a temporary copy; return its test accuracy."""
    best = best_trial(study)
    if best is None:
        raise SweepError(
            f"study {study.study_name} has no complete trial yet: run it first "
            f"(python -m mnist_pipeline.sweep run {study.study_name})"
        )
    name = f"{study.study_name}-best"
    sets = [f"{key}={_yaml(value)}" for key, value in overrides(best).items()]
    command = ["dvc", "exp", "run", "--temp", "-n", name, *(arg for s in sets for arg in ("-S", s))]
    print(
        f"promote: trial {best.number}, validation accuracy {best.value:.4f}, as DVC experiment {name}:\n"
        f"  {' '.join(command)}",
        flush=True,
    )
    with _replacing(name, root):
        # Ctrl-C: DVC's own, so that it cleans up its temporary copy.
        if cli.call(command, stop=signal.SIGINT, grace_s=60, cwd=root) != 0:
            raise SweepError(f"dvc exp run failed for {name}; its output is above (the previous {name} is kept)")
    accuracy = test_accuracy(name, root)
    print(
        f"promote: {name}: validation accuracy {best.value:.4f} chose it (trial {best.number}); "
        f"test accuracy {accuracy:.4f}",
        flush=True,
    )
    return accuracy


@contextlib.contextmanager
def _replacing(name: str, root: Path) -> Iterator[None]:
    """Promoting again replaces the experiment `name` (DVC refuses a name that exists), but only once the
    new one exists: the old one waits as NAME-previous, and comes back if the block fails or is
    interrupted (or at the next promote, if this one was killed outright)."""
    kept = f"{name}-previous"
    _dvc_exp(root, "rename", kept, name)  # left aside by a promote killed outright, and no new one made
    _dvc_exp(root, "remove", kept)  # or a new one was made: the old one goes
    _dvc_exp(root, "rename", name, kept)
    try:
        yield
    except BaseException:
        _dvc_exp(root, "rename", kept, name)  # a failed run made no `name`: never removed here
        raise
    _dvc_exp(root, "remove", kept)


def _dvc_exp(root: Path, *args: str) -> None:
    """`dvc exp ARGS`, which may find nothing to do (no such experiment)."""
    subprocess.run(["dvc", "exp", *args], cwd=root, capture_output=True)


def test_accuracy(name: str, root: Path) -> float:
    """The experiment's test accuracy, as `dvc exp show` has it from its metrics/eval.json."""
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
    for baseline in json.loads(shown.stdout or "[]"):
        for experiment in baseline.get("experiments") or []:
            if experiment.get("name") == name:
                data = experiment["revs"][0]["data"]
                return float(data["metrics"][METRICS]["data"]["test_accuracy"])
    raise SweepError(f"dvc exp show does not list {name} ({shown.stderr.strip() or 'no such experiment'})")


def _yaml(value: Any) -> str:
    """A value as `dvc exp run -S key=VALUE` takes it: YAML, lists in flow style."""
    return json.dumps(value) if isinstance(value, list | bool) else str(value)
