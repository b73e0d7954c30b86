"""DVC stage `train`: train on preloaded tensors and record the whole run in MLflow."""

import time
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from mnist_pipeline import data as raw, engine, evaluation, plots, resume, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.datasets import DATASETS, Dataset
from mnist_pipeline.files import rounded, write_json
from mnist_pipeline.model import load_checkpoint, save_checkpoint
from mnist_pipeline.stages import run_stage

EXAMPLES = 4  # test images logged with the MLflow model as its input example


def train(params: str, data: str, model: str, history: str) -> None:
    cfg = load_params(params)
    dataset = DATASETS[cfg.data.dataset]
    device = engine.setup()
    train_set = raw.load_split(data, train=True).to(device)
    test_set = raw.load_split(data, train=False).to(device)
    data_digest = raw.digest(data)

    training = engine.Training.create(cfg, len(train_set), device)
    # Resume state lives beside the model; it is deleted once the run is complete.
    state = resume.State(Path(model).with_name("train_state.pt"), resume.fingerprint(cfg, data_digest),
                         enabled=cfg.train.resume)
    records, interrupted_run = state.restore(training) or ([], None)
    with tracking.training_run(cfg, dataset, data_digest, device.type, resume_run_id=interrupted_run) as run:
        if tracking.is_server(run.uri):
            print(f"train: runs at {tracking.ui_link(run.uri, run.experiment_id)}", flush=True)
        print(f"train: {len(train_set)} {dataset.name} images on {device}, {cfg.train.epochs} epochs"
              + (f", resuming after epoch {len(records)}" if records else ""), flush=True)
        run.backfill(records)
        started = time.perf_counter()
        for record in engine.fit(training, train_set, test_set, cfg.train, len(records) + 1, _progress_bar):
            seconds = time.perf_counter() - started
            records.append(rounded(record))
            run.log_epoch(record)
            print(_epoch_line(record, seconds), flush=True)
            state.save(run.run_id, records, training)
            started = time.perf_counter()
        save_checkpoint(training.model, cfg.model, dataset.classes, model)
        write_json(history, records)
        _record(run, Path(model), records, test_set.to(torch.device("cpu")),
                train_set.head(plots.SAMPLES).to(torch.device("cpu")), cfg.tracking.registered_model, dataset)
    state.discard()


def _record(run: tracking.Run, model: Path, records: list[dict], test: raw.Split, samples: raw.Split,
            registered_model: str, dataset: Dataset) -> None:
    """The evaluation and the plots as the evaluate and plot stages compute them, from the saved model."""
    checkpoint = load_checkpoint(model)
    report, _ = evaluation.report(checkpoint.model, test, checkpoint.classes)
    predicted = engine.predict(checkpoint.model, samples.images).argmax(1)
    figures = plots.render(records, report, samples.images.numpy(), samples.labels.tolist(), predicted.tolist(),
                           checkpoint.classes)
    version, promoted = run.complete(checkpoint=model, model=checkpoint.model, example=test.images[:EXAMPLES].numpy(),
                                     report=report, figures=figures, dataset=dataset,
                                     registered_model=registered_model)
    alias = f"@{tracking.CHAMPION}"
    champion = f"now {alias}" if promoted else f"{alias} unchanged"
    print(f"train: recorded run {run.run_id}: test accuracy {report['test_accuracy']:.2%}; "
          f"registered {registered_model} version {version}, {champion}", flush=True)


def _progress_bar(batches: Iterable[torch.Tensor], epoch: int) -> Iterable[torch.Tensor]:
    # Drawn only on a terminal; DVC's logs and CI keep just the one line per epoch.
    return tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)


def _epoch_line(r: dict, seconds: float) -> str:
    # The article's log format, epochs counted from 1.
    return (f"epoch: {r['epoch']}, train loss: {r['train_loss']:.5f}, train acc: {r['train_accuracy']:.1%}, "
            f"test loss: {r['test_loss']:.5f}, test acc: {r['test_accuracy']:.1%} ({seconds:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    return run_stage(train, __doc__, argv, params="parameters file", data="folder of the raw dataset files",
                     model="checkpoint to write", history="per-epoch metrics JSON to write")


if __name__ == "__main__":
    raise SystemExit(main())
