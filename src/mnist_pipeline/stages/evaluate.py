"""DVC stage `evaluate`: score models/model.pt on the test set; metrics/eval.json and the predictions."""

from mnist_pipeline import device, evaluation
from mnist_pipeline.data import load_split
from mnist_pipeline.files import atomic_path, write_json
from mnist_pipeline.model import load_checkpoint
from mnist_pipeline.stages import exit_now, run_stage


def evaluate(data: str, model: str, metrics: str, predictions: str) -> None:
    device.setup()
    checkpoint = load_checkpoint(model)  # built from the checkpoint's own config, not params.yaml
    test = load_split(data, train=False)
    report, predicted = evaluation.report(checkpoint.model, test, checkpoint.classes)
    write_json(metrics, report)
    with atomic_path(predictions) as tmp:
        tmp.write_text(evaluation.predictions_csv(test.labels, predicted))
    print(f"evaluate: test accuracy {report['test_accuracy']:.2%}, test loss {report['test_loss']:.5f}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(evaluate, __doc__, argv, data="folder of the raw dataset files", model="checkpoint to score",
                     metrics="evaluation JSON to write", predictions="actual,predicted CSV to write")


if __name__ == "__main__":
    exit_now(main())
