"""Where a stage computes: a pinned thread count, CUDA when there is a GPU, with deterministic kernels, and the
precision the device has natively."""

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


def native_bf16(device: torch.device) -> bool:
    """Does `device` compute in bfloat16 natively: an x86 CPU with AVX-512 BF16 or AMX, a GPU from Ampere on?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    # Elsewhere oneDNN emulates bf16 through fp32: slower than fp32 itself, for fewer bits.
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def precision(asked: str, device: torch.device) -> str:
    """The precision training runs in: `asked` (train.precision), except bf16 on a device without native
    bf16, which trains in fp32 (the train stage says so): a recipe runs on every machine, at its best speed."""
    return "fp32" if asked == "bf16" and not native_bf16(device) else asked
