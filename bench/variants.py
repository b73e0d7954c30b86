"""Variants of a study's winner, chosen on its validation split: the test set plays no part.

    PYTHONPATH=src python bench/variants.py cnn "train.augment.noise=0.3 train.augment.stroke=0.25" ...
    PYTHONPATH=src python bench/variants.py cnn --recipe "model.kind=cnn ..." "train.precision=bf16"

The study's best trial (or, with --recipe, the values given, on the study's split) and each variant
(its params with the given keys changed, `dvc exp run -S` style) are trained on the study's training
images and scored on its held-out validation images: clean, and under the 13 distortions of
metrics/robustness.json. The chosen one has the highest mean distorted accuracy among those whose
clean accuracy is at most --tolerance below the best trial's (the best trial itself qualifies). The
last line is machine-readable: chosen=<0 for the best trial, else the variant's position>
val=<its clean accuracy> val_distorted=<its mean distorted accuracy>
"""

import sys
from statistics import mean

import yaml

from mnist_pipeline import cli
from mnist_pipeline.sweep import spec as specs
from mnist_pipeline.tracking.study_runs import overrides

import on_validation


def _changes(text: str) -> dict:
    """'key=value key=value' as dotted params.yaml values, each value read as YAML (as `-S` does)."""
    return {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in text.split())}


def choose(scores: list[tuple[float, float]], tolerance: float) -> int:
    """Of (clean, mean distorted) accuracies, the best trial's first: the position of the most robust
    one that gives up at most `tolerance` of the best trial's clean accuracy."""
    floor = scores[0][0] - tolerance
    return max((n for n, (clean, _) in enumerate(scores) if clean >= floor), key=lambda n: scores[n][1])


def main() -> None:
    parser = on_validation.parser(__doc__)
    parser.add_argument("variants", nargs="+", help="'key=value ...': the keys a variant changes")
    parser.add_argument("--tolerance", type=float, default=0.001, help="clean accuracy a variant may give up")
    parser.add_argument("--recipe", help="'key=value ...': vary these values instead of the study's best trial")
    args = parser.parse_args()
    project = on_validation.Project.open(args, finished=not args.recipe)
    base = project.base
    if args.recipe:
        start, first = _changes(args.recipe), "the recipe"
    else:
        assert project.best is not None  # a finished study: Project.open checked
        start, first = overrides(project.best), f"trial {project.best.number}"
    candidates = [start, *({**start, **_changes(text)} for text in args.variants)]
    for values in candidates:  # every variant checked as params.yaml is, before any training
        specs.with_values(base, values, "a variant")
    with project.pool(args.workers) as pool:
        jobs = [pool.submit(on_validation.train, base, values, True) for values in candidates]
        scores = []
        for n, (job, name) in enumerate(zip(jobs, [first, *args.variants], strict=True)):
            clean, seconds, distorted = job.result()
            scores.append((clean, mean(distorted.values())))
            worst = min(distorted, key=distorted.__getitem__)
            print(
                f"{n}: {name}: val_accuracy {clean:.4f}, distorted mean {scores[-1][1]:.4f}, "
                f"worst {worst} {distorted[worst]:.4f} ({seconds:.0f} s)\n   {distorted}",
                flush=True,
            )
    chosen = choose(scores, args.tolerance)
    print(f"chosen={chosen} val={scores[chosen][0]:.4f} val_distorted={scores[chosen][1]:.4f}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
