"""DVC stage `train`: the article's MLP and loop on preloaded tensors, logged as one MLflow run."""

import time
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from mnist_pipeline import engine, resume, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.data import load_split
from mnist_pipeline.files import digest, rounded, write_json
from mnist_pipeline.model import save_checkpoint
from mnist_pipeline.stages import run_stage


def train(params: str, data: str, model: str, history: str) -> None:
    cfg = load_params(params)
    device = engine.pick_device()
    train_set = load_split(data, train=True).to(device)
    test_set = load_split(data, train=False).to(device)

    training = engine.Training.create(cfg, len(train_set), device)
    # Resume state lives beside the model; it is deleted once the model is written.
    state_path = Path(model).with_name("train_state.pt")
    key = resume.fingerprint(cfg, Path(data))
    restored = resume.restore(state_path, key, training) if cfg.train.resume else None
    records, interrupted_run = restored or ([], None)
    with tracking.training_run(cfg, resume_run_id=interrupted_run) as run_id:
        print(f"train: {len(train_set)} images on {device}, {cfg.train.epochs} epochs"
              + (f", resuming after epoch {len(records)}" if records else ""), flush=True)
        started = time.perf_counter()
        for record in engine.fit(training, train_set, test_set, cfg.train, len(records) + 1, _progress_bar):
            seconds = time.perf_counter() - started
            records.append(rounded(record))
            tracking.log_epoch(record)
            print(_epoch_line(record, seconds), flush=True)
            if cfg.train.resume:
                resume.save(state_path, key, run_id, records, training)
            started = time.perf_counter()
        save_checkpoint(training.model, cfg.model, model)
        write_json(history, records)
        tracking.log_model(model, test_set.images[:4], digest(model))
    state_path.unlink(missing_ok=True)


def _progress_bar(batches: Iterable[torch.Tensor], epoch: int) -> Iterable[torch.Tensor]:
    # Drawn only on a terminal; DVC's logs and CI keep just the one line per epoch.
    return tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)


def _epoch_line(r: dict, seconds: float) -> str:
    # The article's log format, epochs counted from 1.
    return (f"epoch: {r['epoch']}, train loss: {r['train_loss']:.5f}, train acc: {r['train_accuracy']:.1%}, "
            f"test loss: {r['test_loss']:.5f}, test acc: {r['test_accuracy']:.1%} ({seconds:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    return run_stage(train, __doc__, argv, params="parameters file", data="folder of the raw MNIST files",
                     model="checkpoint to write", history="per-epoch metrics JSON to write")


if __name__ == "__main__":
    raise SystemExit(main())
