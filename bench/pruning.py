"""What pruning cost a finished study: its pruned trials trained again to the full budget, unpruned.

    PYTHONPATH=src python bench/pruning.py mlp [--workers 2] [--storage URL]   # after `make sweep STUDY=mlp`

The same trials without pruning: a complete trial already ran its whole budget (training is seeded,
so it would repeat its value; the best one is trained again to show it), a pruned one is trained
here, with the params it drew, on the same validation split. The last line is machine-readable:
epochs=<trained by the study> unpruned_epochs=<the same trials unpruned> epoch_ratio=<fraction>
best_val=<the study's best> best_val_unpruned=<best of the same trials unpruned>
"""

import sys

from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline import cli
from mnist_pipeline.sweep.storage import finished
from mnist_pipeline.tracking.study_runs import overrides

import on_validation


def main() -> None:
    args = on_validation.parser(__doc__).parse_args()
    project = on_validation.Project.open(args)
    base, best, study = project.base, project.best, project.study
    assert best is not None and study is not None  # a finished study: Project.open checked
    trials = finished(study)
    # The most promising first: the best trial (its value must repeat), then the pruned ones by the
    # value they were pruned at, highest first.
    pruned = sorted((t for t in trials if t.state == TrialState.PRUNED), key=lambda t: -(t.value or 0.0))
    again: list[FrozenTrial] = [best, *pruned]
    with project.pool(args.workers) as pool:
        jobs = {t.number: pool.submit(on_validation.train, base, overrides(t)) for t in again}
        unpruned = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None}
        for trial in again:
            value, seconds, _ = jobs[trial.number].result()
            print(
                f"trial {trial.number} ({trial.state.name.lower()} after {trial.user_attrs['epochs_trained']} epochs, "
                f"val_accuracy {trial.value:.4f}): unpruned {value:.4f} ({seconds:.0f} s)",
                flush=True,
            )
            if trial.state == TrialState.COMPLETE:
                assert value == trial.value, f"trial {trial.number} did not repeat its value: training is not seeded"
            unpruned[trial.number] = value
    epochs = sum(t.user_attrs["epochs_trained"] for t in trials)
    budget = sum(overrides(t)["train.epochs"] for t in trials)
    best_unpruned = max(unpruned, key=lambda n: unpruned[n])
    print(f"study {args.study}: {len(trials)} trials; best unpruned: trial {best_unpruned}")
    print(
        f"epochs={epochs} unpruned_epochs={budget} epoch_ratio={epochs / budget:.3f} "
        f"best_val={best.value:.4f} best_val_unpruned={unpruned[best_unpruned]:.4f}"
    )


if __name__ == "__main__":
    sys.exit(cli.run(main))
