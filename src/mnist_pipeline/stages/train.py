"""DVC stage `train`: train on preloaded tensors, export the model to ONNX, record the whole run in
MLflow, and put the model card in dvc.yaml's artifacts entry.

With train.processes above 1 it launches that many DistributedDataParallel processes of itself
(distributed.py); under torchrun it is one of them. Rank 0 records the run and writes the outputs.
"""

import contextlib
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from mnist_pipeline.cli import Terminated
from mnist_pipeline.config import Params, load_params
from mnist_pipeline.data import splits as raw
from mnist_pipeline.data.catalog import DATASETS, Dataset
from mnist_pipeline.errors import PeerFailure, brief
from mnist_pipeline.evaluation import card, plots, robustness
from mnist_pipeline.evaluation.report import build_report, confusion_matrix
from mnist_pipeline.files import atomic_path, rounded, write_json
from mnist_pipeline.serving import onnx_model
from mnist_pipeline.stages import exit_now, handover, run_stage
from mnist_pipeline.tracking.env import is_server, ui_link
from mnist_pipeline.tracking.registry import CHAMPION
from mnist_pipeline.tracking.run import NullRun, Run, training_run
from mnist_pipeline.training import device as compute
from mnist_pipeline.training import distributed, engine, resume
from mnist_pipeline.training.distributed import World
from mnist_pipeline.training.model import load_checkpoint, save_checkpoint

EXAMPLES = 4  # test images logged with the MLflow model as its input example
CPU = torch.device("cpu")


def train(params: str, data: str, model: str, onnx: str, history: str, card: str) -> None:
    cfg = load_params(params)
    if cfg.train.processes > 1 and not distributed.launched():
        distributed.check_split(cfg.train.batch_size, cfg.train.processes, params)
        args = ["--params", params, "--data", data, "--model", model, "--onnx", onnx, "--history", history]
        args += ["--card", card]
        distributed.launch(cfg.train.processes, __spec__.name, args)
        return
    device = compute.setup()
    world = None
    if distributed.launched():
        world, device = distributed.join(device.type)
    try:
        outputs = Outputs(Path(model), Path(onnx), Path(history), Path(card))
        _train(cfg, params, Path(data), outputs, device, world)
    except Exception as exc:
        if world and not isinstance(exc, PeerFailure):  # for the other ranks, which stop and name the cause
            distributed.report_failure(f"rank {world.rank}: {brief(exc)}")
        raise
    finally:
        distributed.leave()


class Outputs(NamedTuple):
    model: Path  # the checkpoint
    onnx: Path  # its ONNX export
    history: Path  # the per-epoch metrics
    card: Path  # the pipeline file (dvc.yaml) whose artifacts entry gets the model card; made if missing


def _train(cfg: Params, params: str, data: Path, out: Outputs, device: torch.device, world: World | None) -> None:
    dataset = DATASETS[cfg.data.dataset]
    leader, processes = (world.leader, world.size) if world else (True, 1)
    train_set = raw.load_split(data, train=True).to(device)
    test_set = raw.load_split(data, train=False).to(device)
    if world:
        distributed.check_split(cfg.train.batch_size, processes, params, len(train_set))
    checksums = raw.checksums(data)
    data_digest = raw.fingerprint(checksums)

    training = engine.Training.create(cfg, len(train_set), device, processes)
    if leader and training.precision != cfg.train.precision:
        print(
            f"train: note: train.precision is {cfg.train.precision}, but this {device.type.upper()} has no native "
            f"{cfg.train.precision}: training in {training.precision}",
            flush=True,
        )
    # Resume state lives beside the model; it is deleted once the run is complete.
    state = resume.ResumeState(
        out.model.with_name("train_state.pt"),
        resume.fingerprint(cfg, data_digest, device.type),
        enabled=cfg.train.resume and leader,
    )
    records, interrupted_run = _restore(state, training, world)
    recording: contextlib.AbstractContextManager[Run | NullRun] = (
        training_run(cfg, dataset, data_digest, device.type, processes, training.precision, interrupted_run)
        if leader
        else contextlib.nullcontext(NullRun())
    )
    with recording as run:
        if leader and is_server(run.uri):
            print(f"train: runs at {ui_link(run.uri, run.experiment_id)}", flush=True)
        where = f"{device}" + (f", rank {world.rank} of {world.size}" if world else "")
        print(
            f"train: {len(train_set)} {dataset.name} images on {where}, {cfg.train.epochs} epochs"
            + (f", resuming after epoch {len(records)}" if records else ""),
            flush=True,
        )
        run.backfill(records)
        with _peer_failures(world):
            started = time.perf_counter()
            progress = _progress_bar if leader else engine.no_progress
            for record in engine.fit(
                training,
                train_set,
                test_set,
                cfg.train,
                split="test",
                first_epoch=len(records) + 1,
                progress=progress,
                world=world,
            ):
                seconds = time.perf_counter() - started
                records.append(rounded(record))
                run.log_epoch(record)
                if leader:
                    print(_epoch_line(record, seconds), flush=True)
                state.save(run.run_id, records, training)
                started = time.perf_counter()
        if isinstance(run, Run):  # rank 0, the leader
            # The outputs take their names only once the run is recorded: an interruption or a
            # failure leaves the previous ones intact.
            with (
                atomic_path(out.model) as model_tmp,
                atomic_path(out.onnx) as onnx_tmp,
                atomic_path(out.history) as history_tmp,
            ):
                save_checkpoint(training.model, cfg.model, dataset.classes, model_tmp)
                onnx_model.export(model_tmp, onnx_tmp)
                write_json(history_tmp, records)
                data_card = (dataset, checksums, (len(train_set), len(test_set)))
                evaluated, figures, card_text = _record(
                    run,
                    cfg,
                    model_tmp,
                    onnx_tmp,
                    records,
                    test_set.to(CPU),
                    train_set.head(plots.SAMPLES).to(CPU),
                    data_card,
                )
                card.write_dvc_yaml(out.card, cfg.tracking.registered_model, card_text, card.labels(cfg, dataset))
                # The same files for the evaluate and plot stages, so that they need not compute them again.
                handover.leave(out.model, "evaluate", [model_tmp, data], evaluated)
                drawn_from = [evaluated[name] for name in ("metrics", "robustness", "predictions")]
                handover.leave(out.model, "plot", [model_tmp, data, history_tmp, *drawn_from], figures)
    state.discard()


def _restore(
    state: resume.ResumeState, training: engine.Training, world: World | None
) -> tuple[list[dict], str | None]:
    """The interrupted run's epochs and id, and its training state loaded, on every rank (rank 0 reads it)."""
    restored = state.restore(training)
    if world:
        restored, state_dict = distributed.from_leader((restored, training.state_dict()) if restored else (None, None))
        if state_dict is not None and not world.leader:
            training.load_state_dict(state_dict)
    return restored or ([], None)


@contextlib.contextmanager
def _peer_failures(world: World | None):
    """A broken collective, or the launcher's SIGTERM, after another rank failed: a failure, named."""
    try:
        yield
    except (RuntimeError, Terminated):
        if world is None:
            raise
        # Going down either way: the launcher's SIGTERM must not cut short the record of why.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        failure = distributed.peer_failure()
        if failure:
            raise PeerFailure(f"stopped because another process failed: {failure}") from None
        raise


def _record(
    run: Run,
    cfg: Params,
    model: Path,
    exported: Path,
    records: list[dict],
    test: raw.Split,
    samples: raw.Split,
    data: tuple[Dataset, dict[str, str], tuple[int, int]],
) -> tuple[dict[str, bytes], dict[str, bytes], str]:
    """The evaluation and the plots as the evaluate and plot stages compute them, from the saved model,
    and the model card, all recorded in the run, the model registered; returns the evaluate stage's
    files by option name, the PNGs by file name, and the card."""
    dataset, checksums, sizes = data
    checkpoint = load_checkpoint(model)
    report = build_report(checkpoint.model, test, checkpoint.classes, robustness.report(checkpoint.model, test))
    test_accuracy = report.headline["test_accuracy"]
    figures = plots.render(
        checkpoint.model,
        records,
        samples,
        checkpoint.classes,
        matrix=confusion_matrix(report.labels, report.predicted).tolist(),
        robust=report.robust,
        clean_accuracy=test_accuracy,
    )
    name = cfg.tracking.registered_model
    text = card.text(name, cfg, dataset, checksums, sizes, report, run.chosen_by(cfg))
    version, promoted = run.complete(
        checkpoint=model,
        exported=exported,
        example=test.images[:EXAMPLES].numpy(),
        evaluation=report.json_files(),
        test_accuracy=test_accuracy,
        figures=figures,
        card=text,
        dataset=dataset,
        registered_model=name,
    )
    alias = f"@{CHAMPION}"
    champion = f"now {alias}" if promoted else f"{alias} unchanged"
    print(
        f"train: recorded run {run.run_id}: test accuracy {test_accuracy:.2%}; "
        f"registered {name} version {version}, {champion}",
        flush=True,
    )
    return report.stage_files(), figures, text


def _progress_bar(batches: Iterable[torch.Tensor], epoch: int) -> Iterable[torch.Tensor]:
    # Drawn only on a terminal; DVC's logs and CI keep just the one line per epoch.
    return tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)


def _epoch_line(r: dict, seconds: float) -> str:
    # The article's log format, epochs counted from 1.
    return (
        f"epoch: {r['epoch']}, train loss: {r['train_loss']:.5f}, train acc: {r['train_accuracy']:.1%}, "
        f"test loss: {r['test_loss']:.5f}, test acc: {r['test_accuracy']:.1%} ({seconds:.2f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        train,
        __doc__,
        argv,
        params="parameters file",
        data="folder of the raw dataset files",
        model="checkpoint to write",
        onnx="the checkpoint's ONNX export to write",
        history="per-epoch metrics JSON to write",
        card="pipeline file (dvc.yaml) whose artifacts entry gets the model card",
    )


if __name__ == "__main__":
    exit_now(main())
