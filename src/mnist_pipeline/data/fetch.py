"""Fetch a dataset's raw files from a mirror and verify them against the official checksums."""

import hashlib
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from mnist_pipeline.data.catalog import Dataset
from mnist_pipeline.errors import FetchError
from mnist_pipeline.files import atomic_path, digest

TIMEOUT_S = 30


def mirrors_from_env(dataset: Dataset, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The user's own source (e.g. MNIST_MIRROR: a folder or an http(s) URL) first, then the public mirrors."""
    own = environ.get(dataset.mirror_env, "").strip()
    return [own, *dataset.public_mirrors] if own else list(dataset.public_mirrors)


def fetch(dataset: Dataset, dest: str | Path, mirrors: Sequence[str]) -> dict[str, str]:
    """Make `dest` hold every official file of `dataset`; return where each one came from."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    origins = {}
    for name, md5 in dataset.files.items():
        target = dest / name
        if target.exists() and digest(target, "md5") == md5:
            origins[name] = "already present"
            continue
        target.unlink(missing_ok=True)  # a wrong file must not outlive a failed fetch either
        origins[name] = _fetch_one(dataset, name, md5, target, mirrors)
    return origins


def _fetch_one(dataset: Dataset, name: str, md5: str, target: Path, mirrors: Sequence[str]) -> str:
    failures = []
    for mirror in mirrors:
        source = _join(mirror, name)
        try:
            # The file takes its real name only once its checksum matched.
            with atomic_path(target) as tmp:
                actual = _download(source, tmp)
                mtime = dataset.gzip_mtimes.get(name)
                if actual != md5 and mtime and _restore_gzip_header(tmp, name, mtime, md5):
                    return f"{source}, its gzip header restored as published"
                if actual != md5:
                    raise ValueError(f"checksum mismatch: md5 {actual}, expected {md5}")
            return source
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            failures.append(f"{source}: {exc}")
    tried = "\n  ".join(failures)
    raise FetchError(
        f"could not fetch {name}; tried:\n  {tried}\n"
        f"Set {dataset.mirror_env} to a folder or an http(s) URL that holds the official {dataset.name} files, "
        f"e.g. export {dataset.mirror_env}=/path/to/{dataset.name}"
    )


def _restore_gzip_header(path: Path, name: str, mtime: int, md5: str) -> bool:
    """Put back the file name and time that a packager stripped from a gzip header (RFC 1952: the
    FNAME flag, 4 bytes of MTIME, the name after the 10-byte header); keep the result only if it is
    byte for byte the published file, i.e. has the published md5."""
    data = path.read_bytes()
    if data[:4] != b"\x1f\x8b\x08\x00":  # gzip, deflate, no optional fields
        return False
    original = (
        b"\x1f\x8b\x08\x08"
        + mtime.to_bytes(4, "little")
        + data[8:10]
        + name.removesuffix(".gz").encode()
        + b"\0"
        + data[10:]
    )
    if hashlib.md5(original).hexdigest() != md5:
        return False
    path.write_bytes(original)
    return True


def _join(mirror: str, name: str) -> str:
    if urllib.parse.urlparse(mirror).scheme in ("http", "https"):
        return mirror.rstrip("/") + "/" + name
    return str(Path(mirror.removeprefix("file://")) / name)


def _download(source: str, dest: Path) -> str:
    """Copy `source` (a path or an http(s) URL) to `dest`; return the md5 of what arrived."""
    if not source.startswith(("http://", "https://")):
        with open(source, "rb") as src:
            return _copy(src, dest, os.fstat(src.fileno()).st_size, Path(source).name)
    request = urllib.request.Request(source, headers={"User-Agent": "mnist-pipeline"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        size = int(response.headers.get("Content-Length") or 0) or None
        return _copy(response, dest, size, Path(source).name)


def _copy(src: BinaryIO, dest: Path, size: int | None, label: str) -> str:
    md5 = hashlib.md5()
    # tqdm draws only on a terminal, so logs of CI and queued experiments stay clean.
    with dest.open("wb") as out, tqdm(total=size, desc=label, unit="B", unit_scale=True, disable=None) as bar:
        for block in iter(lambda: src.read(1 << 16), b""):
            out.write(block)
            md5.update(block)
            bar.update(len(block))
    return md5.hexdigest()
