"""DVC stage `plot`: loss and accuracy curves, sample images, the confusion matrix and the accuracy under
distortions as PNGs."""

from pathlib import Path

from mnist_pipeline.files import atomic_path, read_json
from mnist_pipeline.stages import exit_now, handover, run_stage


def plot(data: str, model: str, history: str, metrics: str, robustness: str, predictions: str, out: str) -> None:
    # The train stage drew these for its model and metrics; DVC runs plot without it when the code, the
    # data or an input changed (a metrics file edited by hand too), and then they are drawn here.
    inputs = [Path(p) for p in (model, data, history, metrics, robustness, predictions)]
    pngs = handover.take(model, "plot", inputs)
    source = "as the train stage drew them" if pngs else "drawn"
    pngs = pngs or drawn(data, model, history, metrics, robustness, predictions)
    for name, png in pngs.items():
        with atomic_path(Path(out) / name) as tmp:
            tmp.write_bytes(png)
    print(f"plot: wrote {', '.join(f'{out}/{name}' for name in pngs)} ({source})")


def drawn(data: str, model: str, history: str, metrics: str, robustness: str, predictions: str) -> dict[str, bytes]:
    """The PNGs by file name, drawn from the checkpoint, the metrics files and the first training images."""
    # Imported here: a stage that takes the train stage's PNGs needs neither torch nor matplotlib.
    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.evaluation import plots
    from mnist_pipeline.evaluation.report import matrix_from_csv, robustness_from_rows
    from mnist_pipeline.training import device
    from mnist_pipeline.training.model import load_checkpoint

    device.setup()
    checkpoint = load_checkpoint(model)
    samples = load_split(data, train=True).head(plots.SAMPLES)
    return plots.render(
        checkpoint.model,
        read_json(history),
        samples,
        checkpoint.classes,
        matrix=matrix_from_csv(Path(predictions).read_text()).tolist(),
        robust=robustness_from_rows(read_json(robustness)),
        clean_accuracy=read_json(metrics)["test_accuracy"],
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        plot,
        __doc__,
        argv,
        data="folder of the raw dataset files",
        model="checkpoint",
        history="per-epoch metrics JSON",
        metrics="headline metrics JSON (test_accuracy)",
        robustness="robustness JSON ({distortion, accuracy} rows)",
        predictions="actual,predicted CSV (the confusion matrix)",
        out="folder for the PNGs",
    )


if __name__ == "__main__":
    exit_now(main())
