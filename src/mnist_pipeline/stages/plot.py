"""DVC stage `plot`: loss and accuracy curves, sample digits and the confusion matrix as PNGs."""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt

from mnist_pipeline import engine, plots, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.data import load_split
from mnist_pipeline.files import atomic_path, digest, read_json
from mnist_pipeline.model import load_checkpoint
from mnist_pipeline.stages import run_stage

SAMPLES = 10  # the article's row of the first training images


def plot(params_path: str, data_dir: str, model_path: str, history_path: str, eval_path: str, out_dir: str) -> None:
    params = load_params(params_path)
    history, evaluation = read_json(history_path), read_json(eval_path)
    model, _ = load_checkpoint(model_path)
    first = load_split(data_dir, train=True)
    images, labels = first.images[:SAMPLES], first.labels[:SAMPLES]
    predicted = engine.predict(model, images).argmax(1)
    figures = {
        "loss.png": plots.curves(history, "loss", "Cross-entropy loss"),
        "accuracy.png": plots.curves(history, "accuracy", "Accuracy"),
        "samples.png": plots.sample_grid(images.numpy(), labels.tolist(), predicted.tolist()),
        "confusion.png": plots.confusion(evaluation["confusion_matrix"]),
    }
    paths = []
    for name, figure in figures.items():
        path = Path(out_dir) / name
        with atomic_path(path) as tmp:
            # Fixed metadata, so the same figure gives the same bytes and DVC sees no change.
            figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        plt.close(figure)
        paths.append(path)
    print(f"plot: wrote {', '.join(str(p) for p in paths)}")
    with tracking.stage_run(params, digest(model_path)):
        tracking.log_artifacts(paths, "plots")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--data", required=True, help="folder of the raw MNIST files")
    parser.add_argument("--model", required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--metrics", required=True, help="evaluation JSON")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    return run_stage(lambda: plot(args.params, args.data, args.model, args.history, args.metrics, args.out))


if __name__ == "__main__":
    raise SystemExit(main())
