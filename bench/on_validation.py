"""A study's params trained on its validation split, in worker processes: bench/pruning.py and
bench/variants.py. Each process of `pool` loads the split once."""

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from mnist_pipeline.evaluation import robustness
from mnist_pipeline.files import project_root
from mnist_pipeline.sweep import spec as specs
from mnist_pipeline.sweep.storage import SweepError, check_base, load_study, open_storage
from mnist_pipeline.sweep.worker import validation_data, validation_epochs
from mnist_pipeline.tracking.study_runs import best_trial
from mnist_pipeline.training import device as compute

_data: tuple = ()  # this process's training and validation split


def parser(doc: str) -> argparse.ArgumentParser:
    """The arguments both benches take: the study, --workers and --storage (as `sweep run`'s)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--storage")
    return parser


@dataclass
class Project:
    """The study named on the command line (finished, with its best trial, unless only its split is
    needed), and what training needs."""

    base: dict  # params.yaml's content
    spec: specs.StudySpec
    study: optuna.Study | None
    best: FrozenTrial | None
    data_dir: Path

    @classmethod
    def open(cls, args: argparse.Namespace, finished: bool = True) -> "Project":
        """The study's spec; with `finished`, its stored trials and the best one too (an error without one)."""
        root = project_root()
        base, spec = specs.in_project(root, args.study)
        study = best = None
        if finished:
            study = load_study(args.study, open_storage(args.storage, root))
            check_base(study, spec.base(base))  # trained again on today's params.yaml: it must be the study's
            best = best_trial(study)
            if best is None:
                raise SweepError(f"study {args.study} has no complete trial yet")
        return cls(base, spec, study, best, root / "data" / spec.trial_params(base, {}).data.dataset)

    def pool(self, workers: int) -> ProcessPoolExecutor:
        """`workers` processes, each holding the study's training and validation images, for `train`."""
        return ProcessPoolExecutor(
            workers, get_context("spawn"), initializer=_load, initargs=(self.spec, self.data_dir)
        )


def _load(spec: specs.StudySpec, data_dir: Path) -> None:
    global _data
    _data = validation_data(spec, data_dir, compute.setup())


def train(base: dict, values: dict, distorted: bool = False) -> tuple[float, float, dict[str, float]]:
    """The final validation accuracy of the params `values` trained to their budget, its seconds and,
    if `distorted`, the accuracy on the validation images under metrics/robustness.json's distortions."""
    params = specs.with_values(base, values, "a trial's params")
    train, val = _data
    started = time.perf_counter()
    training, epochs = validation_epochs(params, train, val)
    *_, last = epochs
    seconds = time.perf_counter() - started
    return last["val_accuracy"], seconds, robustness.report(training.model, val) if distorted else {}
