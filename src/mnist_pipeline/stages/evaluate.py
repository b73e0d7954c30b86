"""DVC stage `evaluate`: score models/model.pt on the test set and register it in MLflow."""

import argparse
from pathlib import Path

from mnist_pipeline import engine, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.data import load_split
from mnist_pipeline.files import atomic_path, digest, write_json
from mnist_pipeline.model import load_checkpoint
from mnist_pipeline.stages import run_stage


def evaluate(params_path: str, data_dir: str, model_path: str, eval_path: str, predictions_path: str) -> None:
    params = load_params(params_path)
    model, _ = load_checkpoint(model_path)  # the checkpoint's own config, not params.yaml
    test = load_split(data_dir, train=False)
    logits = engine.predict(model, test.images)
    predicted = logits.argmax(1)
    matrix = engine.confusion_matrix(test.labels, predicted)
    report = {
        **{k: round(v, 6) for k, v in engine.scores(logits, test.labels).items()},
        "per_class": {c: {k: round(v, 6) for k, v in pr.items()} for c, pr in engine.per_class(matrix).items()},
        "confusion_matrix": matrix.tolist(),  # rows: actual digit, columns: predicted digit
    }
    write_json(eval_path, report)
    # One row per test image, the shape DVC's confusion-matrix plot template reads.
    with atomic_path(predictions_path) as tmp:
        rows = (f"{a},{p}" for a, p in zip(test.labels.tolist(), predicted.tolist()))
        tmp.write_text("actual,predicted\n" + "\n".join(rows) + "\n")
    print(f"evaluate: test accuracy {report['test_accuracy']:.2%}, test loss {report['test_loss']:.5f}")

    with tracking.stage_run(params, digest(model_path)) as run_id:
        tracking.log_metrics({f"{kind}_{c}": pr[kind] for c, pr in report["per_class"].items()
                              for kind in ("precision", "recall")})
        tracking.log_artifacts([Path(eval_path)], "metrics")
        version, champion = tracking.register_model(params.tracking.registered_model, run_id, report["test_accuracy"])
    print(f"evaluate: registered {params.tracking.registered_model} version {version}"
          + (f", now @{tracking.CHAMPION}" if champion else f", @{tracking.CHAMPION} unchanged (it scores at least as high)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--data", required=True, help="folder of the raw MNIST files")
    parser.add_argument("--model", required=True, help="checkpoint to score")
    parser.add_argument("--metrics", required=True, help="evaluation JSON to write")
    parser.add_argument("--predictions", required=True, help="actual,predicted CSV to write")
    args = parser.parse_args(argv)
    return run_stage(lambda: evaluate(args.params, args.data, args.model, args.metrics, args.predictions))


if __name__ == "__main__":
    raise SystemExit(main())
