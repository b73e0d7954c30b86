"""Training on several processes with DistributedDataParallel: who is who, the batch split, the launch.

`train.processes` above 1 makes the train stage launch that many processes on this machine with
torch's elastic launcher (what `torchrun` runs); under a `torchrun` of your own, on one machine or
several, the stage reads its rank from torchrun's environment. Every rank draws the same permutation
each epoch and takes its slice of every batch; DDP averages the gradients, so the update is the one
of the whole batch, as on one process. Rank 0 alone records the run and writes the outputs.
"""

import logging
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
from torch import distributed as dist

from mnist_pipeline.errors import PeerFailure, PipelineError

FAILURE_KEY = "mnist_pipeline/failure"  # in the launch's key-value store: the first rank's error
FAILURE_WAIT = timedelta(seconds=2)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a batch of indices: near-equal parts, in rank order."""
        return batch.tensor_split(self.size)[self.rank]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the ranks (float64 on the CPU, so totals are exact enough to compare)."""
        values = values.double()
        dist.all_reduce(values)
        return values


def launched() -> bool:
    """Is this process one of several started by torchrun (or by launch below)?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_type: str) -> tuple[World, torch.device]:
    """Join the process group torchrun set up: gloo on the CPU, NCCL with one GPU per process."""
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank), device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_split(batch_size: int, processes: int, source: str, n_train: int = 0) -> None:
    """Refuse a batch that cannot be shared evenly: every rank must take part in every step."""
    if batch_size % processes:
        raise PipelineError(
            f"{source}: train.batch_size = {batch_size}: must divide by the {processes} processes that share each batch"
        )
    if 0 < n_train % batch_size < processes:
        raise PipelineError(
            f"{source}: the last batch has {n_train % batch_size} images, fewer than the "
            f"{processes} processes; choose another train.batch_size"
        )


def from_leader(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object: small things only)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def report_failure(message: str) -> None:
    """Leave this rank's error where the others look for it before they stop (see peer_failure)."""
    if dist.is_initialized():
        try:
            _store().set(FAILURE_KEY, message)
        except RuntimeError:  # the store is gone with the launcher: nothing more to tell
            pass


def peer_failure() -> str | None:
    """Another rank's error, if one failed: a collective that broke, or the launcher's SIGTERM after
    that rank exited, then counts as a failure of the run, not an interruption."""
    if not dist.is_initialized():
        return None
    store = _store()
    try:
        store.wait([FAILURE_KEY], FAILURE_WAIT)
        return store.get(FAILURE_KEY).decode()
    except RuntimeError:  # nothing there in time (or no store left)
        return None


def _store() -> dist.Store:
    return dist.distributed_c10d._get_default_store()


def launch(processes: int, module: str, argv: list[str]) -> None:
    """Run `python -m module argv` as `processes` ranks on this machine, as `torchrun --standalone` does;
    raise a one-line error naming the rank that failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The ranks say what went wrong, and launch() names the rank; the agent's own log would repeat it.
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("torch.distributed.elastic") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", module, *argv)
    except ChildFailedError as exc:
        # The rank that failed first of its own accord, not those that stopped because of it.
        causes = {r: f for r, f in exc.failures.items() if f.exitcode != PeerFailure.exit_code} or exc.failures
        rank = min(causes)
        raise PipelineError(f"training stopped: rank {rank} failed (exit code {causes[rank].exitcode})") from None
    except SignalException as exc:
        raise KeyboardInterrupt(f"signal {exc.sigval}") from None
