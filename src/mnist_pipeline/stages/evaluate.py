"""DVC stage `evaluate`: score models/model.pt on the test set; metrics/eval.json, the predictions and
the accuracy under distortions (metrics/robustness.json)."""

import json
from pathlib import Path

from mnist_pipeline.files import atomic_path
from mnist_pipeline.stages import exit_now, handover, run_stage


def evaluate(data: str, model: str, metrics: str, predictions: str, robustness: str) -> None:
    # The train stage computed these files for its model; DVC runs evaluate without it when the code,
    # the data or the model (from its cache) changed, and then they are computed here.
    files = handover.take(model, "evaluate", [Path(model), Path(data)])
    source = "as the train stage computed them" if files else "computed"
    files = files or evaluated(data, model)
    for name, path in (("metrics", metrics), ("predictions", predictions), ("robustness", robustness)):
        with atomic_path(path) as tmp:
            tmp.write_bytes(files[name])
    report, figures = json.loads(files["metrics"]), json.loads(files["robustness"])
    print(
        f"evaluate: test accuracy {report['test_accuracy']:.2%}, test loss {report['test_loss']:.5f}; "
        f"distorted: {min(figures.values()):.2%} to {max(figures.values()):.2%} ({source})"
    )


def evaluated(data: str, model: str) -> dict[str, bytes]:
    """The stage's files, computed from the checkpoint alone (its own config, not params.yaml)."""
    # Imported here: a stage that takes the train stage's files needs neither torch nor the data.
    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.evaluation.report import build_report, evaluation_files
    from mnist_pipeline.evaluation.robustness import report as robustness_report
    from mnist_pipeline.training import device
    from mnist_pipeline.training.model import load_checkpoint

    device.setup()
    checkpoint = load_checkpoint(model)
    test = load_split(data, train=False)
    report, predicted = build_report(checkpoint.model, test, checkpoint.classes)
    return evaluation_files(report, predicted, test.labels, robustness_report(checkpoint.model, test))


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        evaluate,
        __doc__,
        argv,
        data="folder of the raw dataset files",
        model="checkpoint to score",
        metrics="evaluation JSON to write",
        predictions="actual,predicted CSV to write",
        robustness="robustness JSON to write: distortion name -> test accuracy",
    )


if __name__ == "__main__":
    exit_now(main())
