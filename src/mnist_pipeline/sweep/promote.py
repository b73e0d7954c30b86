"""`sweep promote`: the best trial's params become the recipe and DVC experiment STUDY-best, trained by the
pipeline on the whole training set, recorded and registered like any run, then scored on the test set."""

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna

from mnist_pipeline import cli, recipes
from mnist_pipeline.files import atomic_path
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
    command = ["dvc", "exp", "run", "--temp", "-n", name, "-S", f"{recipes.GROUP}={name}"]
    with _replacing(name, root):
        recipe = recipes.write(root, name, overrides(best), header)
        print(
            f"promote: trial {best.number}, validation accuracy {best.value:.4f}, as the recipe "
            f"{recipe.relative_to(root)} and the DVC experiment {name}:\n  {' '.join(command)}",
            flush=True,
        )
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
    """Promoting again replaces the experiment `name` (DVC refuses a name that exists) and its recipe, but
    only once the new one exists: the old experiment waits as NAME-previous, and it and the old recipe
    come back if the block fails or is interrupted (the experiment also at the next promote, if this
    one was killed outright)."""
    kept = f"{name}-previous"
    recipe = root / recipes.RECIPES / f"{name}.yaml"
    old_recipe = recipe.read_bytes() if recipe.exists() else None
    _dvc_exp(root, "rename", kept, name)  # left aside by a promote killed outright, and no new one made
    _dvc_exp(root, "remove", kept)  # or a new one was made: the old one goes
    _dvc_exp(root, "rename", name, kept)
    try:
        yield
    except BaseException:
        _dvc_exp(root, "rename", kept, name)  # a failed run made no `name`: never removed here
        if old_recipe is None:
            recipe.unlink(missing_ok=True)
        else:
            with atomic_path(recipe) as tmp:
                tmp.write_bytes(old_recipe)
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


def about(study: str, trial: int, accuracy: float) -> list[str]:
    """The header of a study's recipe: which trial chose it, on what, and how to run it."""
    return [
        f"The `{study}` search's winner, chosen on validation: trial {trial}, validation accuracy {accuracy:.4f}.",
        f"Written by: python -m mnist_pipeline.sweep promote {study}",
        f"Run it: dvc exp run -n {study}-best -S {recipes.GROUP}={study}-best",
    ]
