"""DVC stage `plot`: loss and accuracy curves, sample digits and the confusion matrix as PNGs."""

from pathlib import Path

from mnist_pipeline import engine, plots, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.data import load_split
from mnist_pipeline.files import atomic_path, digest, read_json
from mnist_pipeline.model import load_checkpoint
from mnist_pipeline.stages import run_stage

SAMPLES = 10  # the article's row of the first training images


def plot(params: str, data: str, model: str, history: str, metrics: str, out: str) -> None:
    cfg = load_params(params)
    records, evaluation = read_json(history), read_json(metrics)
    mlp, _ = load_checkpoint(model)
    first = load_split(data, train=True)
    images, labels = first.images[:SAMPLES], first.labels[:SAMPLES]
    predicted = engine.predict(mlp, images).argmax(1)
    figures = {
        "loss.png": plots.curves(records, "loss", "Cross-entropy loss"),
        "accuracy.png": plots.curves(records, "accuracy", "Accuracy"),
        "samples.png": plots.sample_grid(images.numpy(), labels.tolist(), predicted.tolist()),
        "confusion.png": plots.confusion(evaluation["confusion_matrix"]),
    }
    paths = []
    for name, figure in figures.items():
        path = Path(out) / name
        with atomic_path(path) as tmp:
            # No software version in the metadata: the same figure gives the same bytes.
            figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        paths.append(path)
    print(f"plot: wrote {', '.join(str(p) for p in paths)}")
    with tracking.stage_run(cfg, digest(model)):
        tracking.log_artifacts(paths, "plots")


def main(argv: list[str] | None = None) -> int:
    return run_stage(plot, __doc__, argv, params="parameters file", data="folder of the raw MNIST files",
                     model="checkpoint", history="per-epoch metrics JSON", metrics="evaluation JSON",
                     out="folder for the PNGs")


if __name__ == "__main__":
    raise SystemExit(main())
