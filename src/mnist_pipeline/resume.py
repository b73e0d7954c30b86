"""Resumable training state: saved after every epoch, restored only for the same params and data."""

import hashlib
import json
from pathlib import Path

import torch

from mnist_pipeline.config import Params, flatten
from mnist_pipeline.engine import Training
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


def save(path: Path, fingerprint: str, run_id: str, history: list[dict], training: Training) -> None:
    save_torch(path, {"fingerprint": fingerprint, "run_id": run_id, "history": history, **training.state_dict()})


def restore(path: Path, fingerprint: str, training: Training) -> tuple[list[dict], str] | None:
    """Load the saved state into `training`; return (history, run id), or None to start afresh."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable (another torch version, a damaged disk): train from scratch
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        return None
    training.load_state_dict(state)
    return state["history"], state["run_id"]
