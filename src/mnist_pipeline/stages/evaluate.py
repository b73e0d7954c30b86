"""DVC stage `evaluate`: score models/model.pt on the test set; metrics/eval.json, the predictions and
the accuracy under distortions (metrics/robustness.json)."""

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.evaluation.report import predictions_csv, build_report
from mnist_pipeline.evaluation.robustness import report as robustness_report
from mnist_pipeline.files import atomic_path, write_json
from mnist_pipeline.stages import exit_now, run_stage
from mnist_pipeline.training import device
from mnist_pipeline.training.model import load_checkpoint


def evaluate(data: str, model: str, metrics: str, predictions: str, robustness: str) -> None:
    device.setup()
    checkpoint = load_checkpoint(model)  # built from the checkpoint's own config, not params.yaml
    test = load_split(data, train=False)
    report, predicted = build_report(checkpoint.model, test, checkpoint.classes)
    figures = robustness_report(checkpoint.model, test)
    write_json(metrics, report)
    write_json(robustness, figures)
    with atomic_path(predictions) as tmp:
        tmp.write_text(predictions_csv(test.labels, predicted))
    print(
        f"evaluate: test accuracy {report['test_accuracy']:.2%}, test loss {report['test_loss']:.5f}; "
        f"distorted: {min(figures.values()):.2%} to {max(figures.values()):.2%}"
    )


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
