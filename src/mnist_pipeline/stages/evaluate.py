"""DVC stage `evaluate`: score models/model.pt on the test set; metrics/eval.json (the headline metrics),
and for DVC's plots the per-class figures, the accuracy under each distortion and the predictions."""

import json
from pathlib import Path

from mnist_pipeline.files import atomic_path
from mnist_pipeline.stages import exit_now, handover, run_stage


def evaluate(data: str, model: str, metrics: str, per_class: str, robustness: str, predictions: str) -> None:
    # The train stage computed these files for its model; DVC runs evaluate without it when the code,
    # the data or the model (from its cache) changed, and then they are computed here.
    files = handover.take(model, "evaluate", [Path(model), Path(data)])
    source = "as the train stage computed them" if files else "computed"
    files = files or evaluated(data, model)
    paths = {"metrics": metrics, "per_class": per_class, "robustness": robustness, "predictions": predictions}
    for name, path in paths.items():
        with atomic_path(path) as tmp:
            tmp.write_bytes(files[name])
    headline = json.loads(files["metrics"])
    robust = [row["accuracy"] for row in json.loads(files["robustness"])]
    print(
        f"evaluate: test accuracy {headline['test_accuracy']:.2%}, test loss {headline['test_loss']:.5f}; "
        f"distorted: {min(robust):.2%} to {max(robust):.2%} ({source})"
    )


def evaluated(data: str, model: str) -> dict[str, bytes]:
    """The stage's files by option name, computed from the checkpoint alone (its own config, not params.yaml)."""
    # Imported here: a stage that takes the train stage's files needs neither torch nor the data.
    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.evaluation.report import build_report
    from mnist_pipeline.evaluation.robustness import report as robustness_report
    from mnist_pipeline.training import device
    from mnist_pipeline.training.model import load_checkpoint

    device.setup()
    checkpoint = load_checkpoint(model)
    test = load_split(data, train=False)
    robust = robustness_report(checkpoint.model, test)
    return build_report(checkpoint.model, test, checkpoint.classes, robust).stage_files()


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        evaluate,
        __doc__,
        argv,
        data="folder of the raw dataset files",
        model="checkpoint to score",
        metrics="headline metrics JSON to write",
        per_class="per-class precision and recall JSON to write",
        robustness="robustness JSON to write: a {distortion, accuracy} row per distortion",
        predictions="actual,predicted CSV to write",
    )


if __name__ == "__main__":
    exit_now(main())
