"""`sweep promote`: the best trial's params become the recipe and DVC experiment STUDY-best, trained by the
pipeline on the whole training set, recorded and registered like any run, then scored on the test set."""

import json
import subprocess
from pathlib import Path

import optuna

from mnist_pipeline import recipes
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
    header = about(study.study_name, best.number, float(best.value or 0.0))  # a complete trial has its value
    recipe = recipes.write(root, name, overrides(best), header)
    command = ["dvc", "exp", "run", "--temp", "-n", name, "-S", f"{recipes.GROUP}={name}"]
    print(
        f"promote: trial {best.number}, validation accuracy {best.value:.4f}, as the recipe "
        f"{recipe.relative_to(root)} and the DVC experiment {name}:\n  {' '.join(command)}",
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


def about(study: str, trial: int, accuracy: float) -> list[str]:
    """The header of a study's recipe: which trial chose it, on what, and how to run it."""
    return [
        f"The `{study}` search's winner, chosen on validation: trial {trial}, validation accuracy {accuracy:.4f}.",
        f"Written by: python -m mnist_pipeline.sweep promote {study}",
        f"Run it: dvc exp run -n {study}-best -S {recipes.GROUP}={study}-best",
    ]
