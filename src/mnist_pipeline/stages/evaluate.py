"""DVC stage `evaluate`: score models/model.pt on the test set and register it in MLflow."""

from pathlib import Path

from mnist_pipeline import engine, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.data import load_split
from mnist_pipeline.files import atomic_path, digest, rounded, write_json
from mnist_pipeline.model import load_checkpoint
from mnist_pipeline.stages import run_stage


def evaluate(params: str, data: str, model: str, metrics: str, predictions: str) -> None:
    cfg = load_params(params)
    mlp, _ = load_checkpoint(model)  # built from the checkpoint's own config, not params.yaml
    test = load_split(data, train=False)
    logits = engine.predict(mlp, test.images)
    predicted = logits.argmax(1)
    matrix = engine.confusion_matrix(test.labels, predicted)
    report = {
        **rounded(engine.scores(logits, test.labels)),
        "per_class": {c: rounded(pr) for c, pr in engine.per_class(matrix).items()},
        "confusion_matrix": matrix.tolist(),  # rows: actual digit, columns: predicted digit
    }
    write_json(metrics, report)
    # One row per test image, the shape DVC's confusion-matrix plot template reads.
    with atomic_path(predictions) as tmp:
        rows = (f"{a},{p}" for a, p in zip(test.labels.tolist(), predicted.tolist()))
        tmp.write_text("actual,predicted\n" + "\n".join(rows) + "\n")
    print(f"evaluate: test accuracy {report['test_accuracy']:.2%}, test loss {report['test_loss']:.5f}")

    name = cfg.tracking.registered_model
    with tracking.stage_run(cfg, digest(model)) as run_id:
        tracking.log_metrics({f"{kind}_{c}": pr[kind] for c, pr in report["per_class"].items()
                              for kind in ("precision", "recall")})
        tracking.log_artifacts([Path(metrics)], "metrics")
        version, promoted = tracking.register_model(name, run_id, report["test_accuracy"])
    alias = f"@{tracking.CHAMPION}"
    champion = f"now {alias}" if promoted else f"{alias} unchanged (it scores at least as high)"
    print(f"evaluate: registered {name} version {version}, {champion}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(evaluate, __doc__, argv, params="parameters file", data="folder of the raw MNIST files",
                     model="checkpoint to score", metrics="evaluation JSON to write",
                     predictions="actual,predicted CSV to write")


if __name__ == "__main__":
    raise SystemExit(main())
