"""DVC stage `train`: the article's MLP and loop on preloaded tensors, logged as one MLflow run."""

import argparse
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from mnist_pipeline import engine, resume, tracking
from mnist_pipeline.config import load_params
from mnist_pipeline.data import load_split
from mnist_pipeline.files import digest, write_json
from mnist_pipeline.model import save_checkpoint
from mnist_pipeline.stages import run_stage


def train(params_path: str, data_dir: str, model_path: str, history_path: str) -> None:
    params = load_params(params_path)
    device = engine.pick_device()
    train_set = load_split(data_dir, train=True).to(device)
    test_set = load_split(data_dir, train=False).to(device)

    training = engine.Training.create(params, len(train_set), device)
    # Resume state lives beside the model; it is deleted once the model is written.
    state_path = Path(model_path).with_name("train_state.pt")
    key = resume.fingerprint(params, Path(data_dir))
    restored = resume.restore(state_path, key, training) if params.train.resume else None
    history, interrupted_run = restored or ([], None)
    with tracking.training_run(params, resume_run_id=interrupted_run) as run_id:
        print(f"train: {len(train_set)} images on {device}, {params.train.epochs} epochs"
              + (f", resuming after epoch {len(history)}" if history else ""), flush=True)
        started = time.perf_counter()
        for record in engine.fit(training, train_set, test_set, params.train, len(history) + 1, _progress_bar):
            seconds = time.perf_counter() - started
            history.append({k: round(v, 6) for k, v in record.items()})
            tracking.log_epoch(record)
            print(_epoch_line(record, seconds), flush=True)
            if params.train.resume:
                resume.save(state_path, key, run_id, history, training)
            started = time.perf_counter()
        save_checkpoint(training.model, params.model, model_path)
        write_json(history_path, history)
        tracking.log_model(training.model, test_set.images[:4], digest(model_path))
    state_path.unlink(missing_ok=True)


def _progress_bar(batches: Iterable[torch.Tensor], epoch: int) -> Iterable[torch.Tensor]:
    # Drawn only on a terminal; DVC's logs and CI keep just the one line per epoch.
    return tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)


def _epoch_line(r: dict, seconds: float) -> str:
    # The article's log format, epochs counted from 1.
    return (f"epoch: {r['epoch']}, train loss: {r['train_loss']:.5f}, train acc: {r['train_accuracy']:.1%}, "
            f"test loss: {r['test_loss']:.5f}, test acc: {r['test_accuracy']:.1%} ({seconds:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--data", required=True, help="folder of the raw MNIST files")
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--history", required=True, help="per-epoch metrics JSON to write")
    args = parser.parse_args(argv)
    return run_stage(lambda: train(args.params, args.data, args.model, args.history))


if __name__ == "__main__":
    raise SystemExit(main())
