"""Resumable training state: saved after every epoch, restored only for the same params and data."""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_pipeline.config import Params, flatten
from mnist_pipeline.files import digest, save_torch

# Keys that change where a run is logged or whether it resumes, not what it computes.
_NOT_RESULT_KEYS = ("tracking.", "train.resume")


def fingerprint(params: Params, data_dir: Path) -> str:
    """Digest of everything that determines the training result: params and the raw data."""
    relevant = {k: v for k, v in flatten(params).items() if not k.startswith(_NOT_RESULT_KEYS)}
    h = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    for path in sorted(Path(data_dir).glob("*.gz")):
        h.update(f"{path.name}:{digest(path, 'md5')}".encode())
    return h.hexdigest()


def save(path: Path, fingerprint: str, run_id: str, history: list[dict], *, model: nn.Module,
         optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator) -> None:
    state = {
        "fingerprint": fingerprint,
        "run_id": run_id,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state(),
    }
    save_torch(path, state)


def restore(path: Path, fingerprint: str, *, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, generator: torch.Generator) -> tuple[list[dict], str] | None:
    """Load the saved state into the given objects; return (history, run id), or None to start afresh."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable (another torch version, a damaged disk): train from scratch
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    return state["history"], state["run_id"]
