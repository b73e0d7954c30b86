"""Where a stage computes: a pinned thread count, and CUDA when there is a GPU, with deterministic kernels."""

import os

import torch

THREADS = 1  # intra-op threads per process (see setup)


def setup() -> torch.device:
    """Pin the thread count and pick the device; deterministic kernels either way, so reruns match.

    One thread: the weights' bytes depend on the thread count (other summation orders), so it
    must be fixed, and one thread per process keeps an epoch steady when other work shares the
    cores (two threads on two busy cores ran 5x slower), while parallel runs use processes:
    `dvc queue start -j 2`, or train.processes.
    """
    torch.set_num_threads(THREADS)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(True)
    return torch.device("cuda")
