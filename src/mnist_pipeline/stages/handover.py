"""What the train stage computed for the evaluate and plot stages, kept beside the model for them: each
stage's files, found again only for the same inputs (bytes) and the same package code."""

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline.files import digest

PACKAGE = Path(__file__).parents[1]
Input = Path | bytes  # a file or a folder (its *.gz files), or the bytes a file will hold


def leave(model: str | Path, stage: str, inputs: Sequence[Input], files: dict[str, bytes]) -> None:
    """Keep `files` (name -> bytes) for `stage`, whose inputs are `inputs`; replaces what it kept before."""
    kept = _folder(model, stage)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(kept, ignore_errors=True)  # first: a failure below leaves nothing to take, not the old files
    tmp = Path(tempfile.mkdtemp(dir=kept.parent, prefix=f".{stage}."))
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        (tmp / ".inputs").write_text(_fingerprint(stage, inputs))
        tmp.rename(kept)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def take(model: str | Path, stage: str, inputs: Sequence[Input]) -> dict[str, bytes] | None:
    """The files left for `stage` if they were computed from exactly these inputs by this code, else None."""
    kept = _folder(model, stage)
    try:
        if (kept / ".inputs").read_text() != _fingerprint(stage, inputs):
            return None
        return {path.name: path.read_bytes() for path in sorted(kept.iterdir()) if path.name != ".inputs"}
    except OSError:  # nothing kept, or only part of it
        return None


def _folder(model: str | Path, stage: str) -> Path:
    model = Path(model)
    return model.with_name(f"{model.name}.handover") / stage


def _fingerprint(stage: str, inputs: Sequence[Input]) -> str:
    h = hashlib.sha256(f"{stage}\n{_code()}\n".encode())
    for part in inputs:
        h.update(f"{_digest(part)}\n".encode())
    return h.hexdigest()


def _digest(part: Input) -> str:
    if isinstance(part, bytes):
        return hashlib.sha256(part).hexdigest()
    if part.is_dir():
        return hashlib.sha256(
            "".join(f"{p.name}:{digest(p)}\n" for p in sorted(part.glob("*.gz"))).encode()
        ).hexdigest()
    return digest(part)


def _code() -> str:
    """Every source file of the package: any change to the code that computes the files discards them."""
    files = sorted(p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return hashlib.sha256("".join(f"{p.relative_to(PACKAGE)}:{digest(p)}\n" for p in files).encode()).hexdigest()
