"""`sweep promote`: the best trial's params become the DVC experiment STUDY-best, trained by the pipeline
on the whole training set, recorded and registered like any run, then scored on the test set."""

import json
import subprocess
from pathlib import Path
from typing import Any

import optuna

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
    # Promoting again replaces the experiment: DVC refuses a name that exists.
    subprocess.run(["dvc", "exp", "remove", name], cwd=root, capture_output=True)
    if subprocess.run(command, cwd=root).returncode != 0:
        raise SweepError(f"dvc exp run failed for {name}; its output is above")
    accuracy = test_accuracy(name, root)
    print(
        f"promote: {name}: validation accuracy {best.value:.4f} chose it (trial {best.number}); "
        f"test accuracy {accuracy:.4f}",
        flush=True,
    )
    return accuracy


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
