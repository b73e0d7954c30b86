"""Run-to-run spread of the default run's final test metrics, behind the CI's cross-machine tolerance.

    PYTHONPATH=src python bench/spread.py --seeds 5     # about a minute per run on 2 cores

Other CPUs round differently, which moves a 50-epoch run a little. The nearest thing on one
machine is the same run with another thread count (other summation orders in the matmuls); the
seed-to-seed spread bounds what any such perturbation can do.
"""

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch

from mnist_pipeline.config import load_params
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.training import engine


def final(params, data, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    training = engine.Training.create(params, len(data[0]), torch.device("cpu"))
    *_, last = engine.fit(training, data[0], data[1], params.train, split="test")
    return {k: last[k] for k in ("test_accuracy", "test_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/mnist"))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    params = load_params(args.params)
    data = (load_split(args.data, train=True), load_split(args.data, train=False))
    threads = torch.get_num_threads()
    runs = {}
    for seed in range(args.seeds):
        runs[seed] = final(dataclasses.replace(params, seed=seed), data, threads)
        print(f"seed {seed}, {threads} threads: {runs[seed]}", flush=True)
    other = final(params, data, 1 if threads > 1 else 2)
    print(f"seed 0, other thread count: {other}")
    for key in ("test_accuracy", "test_loss"):
        values = [r[key] for r in runs.values()]
        print(
            f"{key}: seed spread sd {statistics.stdev(values):.5f}, range {max(values) - min(values):.5f}; "
            f"thread-count change moved seed 0 by {abs(other[key] - runs[0][key]):.5f}"
        )


if __name__ == "__main__":
    main()
