"""Atomic file output: a reader sees the old file (or folder) or the complete new one, never a torn write."""

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The file gets `mode`, or by default what the umask leaves of 0666.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # By default not mkstemp's 0600, which would hide outputs from other users.
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new, empty folder beside `path`; on success it takes the place of `path` (a folder, which is
    removed): a reader sees the old folder or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = new.with_suffix(".old")
    try:
        yield new
        os.chmod(new, 0o777 & ~_umask())  # not mkdtemp's 0700
        if path.exists():
            path.rename(old)
        new.rename(path)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def project_root() -> Path:
    """The project's root: the working directory, except inside `dvc exp run --temp/--queue`, whose
    stages run in a copy under .dvc/tmp/exps and DVC_ROOT names the real root."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(data: Any) -> str:
    """`data` as stable, diff-friendly JSON (sorted keys, one trailing newline)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data))


def rounded(values: dict[str, float]) -> dict[str, float]:
    """Metrics to 6 digits for the JSON files: readable, and diffs show only real changes."""
    return {k: round(v, 6) for k, v in values.items()}


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save, atomically and byte-for-byte reproducibly."""
    import torch  # here, not at the top: the download stage should not pay torch's import time

    buffer = io.BytesIO()  # a file name would be written into the archive, and ours are random
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
