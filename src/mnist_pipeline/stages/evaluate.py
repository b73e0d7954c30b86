"""DVC stage `evaluate`: score models/model.pt on the test set; metrics/eval.json (the headline metrics),
and for DVC's plots the per-class figures, the accuracy under each distortion and the predictions."""

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.evaluation.report import build_report
from mnist_pipeline.evaluation.robustness import report as robustness_report
from mnist_pipeline.files import atomic_path
from mnist_pipeline.stages import exit_now, run_stage
from mnist_pipeline.training import device
from mnist_pipeline.training.model import load_checkpoint


def evaluate(data: str, model: str, metrics: str, per_class: str, robustness: str, predictions: str) -> None:
    device.setup()
    checkpoint = load_checkpoint(model)  # built from the checkpoint's own config, not params.yaml
    test = load_split(data, train=False)
    report = build_report(checkpoint.model, test, checkpoint.classes, robustness_report(checkpoint.model, test))
    texts = report.json_files()
    outputs = {
        metrics: texts["eval.json"],
        per_class: texts["per_class.json"],
        robustness: texts["robustness.json"],
        predictions: report.predictions_csv(),
    }
    for path, text in outputs.items():
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    headline, robust = report.headline, report.robust.values()
    print(
        f"evaluate: test accuracy {headline['test_accuracy']:.2%}, test loss {headline['test_loss']:.5f}; "
        f"distorted: {min(robust):.2%} to {max(robust):.2%}"
    )


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
