"""A study's params trained on its validation split, in worker processes: bench/pruning.py and
bench/variants.py. Each process of `pool` loads the split once."""

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from mnist_pipeline import device as compute
from mnist_pipeline import engine, robustness
from mnist_pipeline.sweep import spec as specs
from mnist_pipeline.sweep.search import validation_data

_data: tuple = ()  # this process's training and validation split


def pool(spec: specs.Study, base: dict, root: Path, workers: int) -> ProcessPoolExecutor:
    """`workers` processes, each holding the study's training and validation images, for `train`."""
    data_dir = root / "data" / spec.trial_params(base, {}).data.dataset
    return ProcessPoolExecutor(workers, get_context("spawn"), initializer=_load, initargs=(spec, data_dir))


def _load(spec: specs.Study, data_dir: Path) -> None:
    global _data
    _data = validation_data(spec, data_dir, compute.setup())


def train(base: dict, values: dict, distorted: bool = False) -> tuple[float, float, dict[str, float]]:
    """The final validation accuracy of the params `values` trained to their budget, its seconds and,
    if `distorted`, the accuracy on the validation images under metrics/robustness.json's distortions."""
    params = specs.with_values(base, values, "a trial's params")
    train, val = _data
    started = time.perf_counter()
    training = engine.Training.create(params, len(train), train.images.device)
    *_, last = engine.fit(training, train, val, params.train)
    seconds = time.perf_counter() - started
    return last["test_accuracy"], seconds, robustness.report(training.model, val) if distorted else {}
