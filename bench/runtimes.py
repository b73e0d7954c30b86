"""Inference on PyTorch against onnxruntime, one thread each as the scoring server runs them: one image,
and a batch of 256, for the MLP and the CNN. Part of `make bench` (bench.py); alone:

    PYTHONPATH=src python bench/runtimes.py
"""

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mnist_pipeline.config import ModelConfig
from mnist_pipeline.serving import onnx_model
from mnist_pipeline.serving.inference import from_checkpoint
from mnist_pipeline.training.model import build, save_checkpoint

BATCH = 256
CALLS = 2000  # timed calls of one image, after as many again to warm up; of a batch, 60 times fewer


def median_seconds(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, calls: int) -> float:
    for _ in range(calls):
        predict(images)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        predict(images)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(kind: str, cfg: ModelConfig, calls: int) -> dict[str, float]:
    """Median seconds per call of each runtime and batch size for a `kind` model built from `cfg`
    (the weights do not change the time): {"torch_1": s, "onnx_1": s, "torch_256": s, "onnx_256": s}."""
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((BATCH, 1, 28, 28), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.pt"
        cfg = dataclasses.replace(cfg, kind=kind)
        save_checkpoint(build(cfg), cfg, tuple("0123456789"), checkpoint)
        onnx_model.export(checkpoint, checkpoint.with_suffix(".onnx"))
        runtimes = {runtime: from_checkpoint(checkpoint, runtime).predict for runtime in ("torch", "onnx")}
        largest = np.abs(runtimes["torch"](images) - runtimes["onnx"](images)).max()
        assert largest <= 1e-5, f"{kind}: the runtimes disagree by {largest}"
        return {
            f"{runtime}_{n}": median_seconds(predict, images[:n], calls if n == 1 else max(calls // 60, 3))
            for n in (1, BATCH)
            for runtime, predict in runtimes.items()  # interleaved: the machine's noise hits both alike
        }


def report(cfg: ModelConfig, calls: int = CALLS) -> dict[str, str]:
    """Print a line per model kind; return the fields for bench.py's last line."""
    torch.set_num_threads(1)  # as the train stage and every scoring-server worker run
    fields = {}
    for kind in ("mlp", "cnn"):
        t = compare(kind, cfg, calls)
        print(
            f"inference {kind:4s}: one image torch {t['torch_1'] * 1e6:.0f} us, onnxruntime {t['onnx_1'] * 1e6:.0f} us "
            f"({t['torch_1'] / t['onnx_1']:.1f}x); batch {BATCH} torch {t['torch_256'] * 1e3:.2f} ms, "
            f"onnxruntime {t['onnx_256'] * 1e3:.2f} ms ({t['torch_256'] / t['onnx_256']:.1f}x)",
            flush=True,
        )
        fields |= {
            f"{kind}_onnx_single_speedup": f"{t['torch_1'] / t['onnx_1']:.2f}",
            f"{kind}_onnx_batch_speedup": f"{t['torch_256'] / t['onnx_256']:.2f}",
            f"{kind}_onnx_single_us": f"{t['onnx_1'] * 1e6:.0f}",
            f"{kind}_onnx_batch_ms": f"{t['onnx_256'] * 1e3:.2f}",
        }
    return fields


if __name__ == "__main__":
    from mnist_pipeline.config import load_params

    print(" ".join(f"{k}={v}" for k, v in report(load_params("params.yaml").model).items()))
