"""Resumable training state: saved after every epoch, restored only for the same params and data."""

import hashlib
import json
from pathlib import Path

import torch

from mnist_pipeline.config import Params, flatten
from mnist_pipeline.files import save_torch
from mnist_pipeline.training.engine import Training

# Keys that change where a run is logged or whether it resumes, not what it computes.
_NOT_RESULT_KEYS = ("tracking.", "train.resume")


def fingerprint(params: Params, data_digest: str, device: str) -> str:
    """Digest of everything that determines the training result: params, the raw data (data.digest) and
    the device type ("cpu", "cuda"), whose kernels round differently and take another training step."""
    relevant = {k: v for k, v in flatten(params).items() if not k.startswith(_NOT_RESULT_KEYS)}
    described = {**relevant, "data": data_digest, "device": device}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class ResumeState:
    """The state file of one run: written after each epoch, read back by a run with the same
    fingerprint; with train.resume off it is neither written nor read."""

    def __init__(self, path: Path, fingerprint: str, enabled: bool):
        self.path, self.fingerprint, self.enabled = Path(path), fingerprint, enabled

    def save(self, run_id: str, history: list[dict], training: Training) -> None:
        if self.enabled:
            save_torch(
                self.path,
                {"fingerprint": self.fingerprint, "run_id": run_id, "history": history, **training.state_dict()},
            )

    def restore(self, training: Training) -> tuple[list[dict], str] | None:
        """Load the saved state into `training`; return (history, run id), or None to start afresh."""
        if not self.enabled or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable (another torch version, a damaged disk): train from scratch
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None
        training.load_state_dict(state)
        return state["history"], state["run_id"]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
