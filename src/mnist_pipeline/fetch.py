"""Fetch the raw MNIST files from a mirror and verify them against torchvision's checksums."""

import hashlib
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from mnist_pipeline.errors import FetchError
from mnist_pipeline.files import atomic_path, digest

# File name -> md5, exactly as torchvision.datasets.MNIST.resources lists them (a test checks).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# torchvision.datasets.MNIST.mirrors, tried after the user's own mirror.
PUBLIC_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MIRROR_ENV = "MNIST_MIRROR"
TIMEOUT_S = 30


def mirrors_from_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The user's MNIST_MIRROR (a folder or an http(s) URL) first, then the public mirrors."""
    own = environ.get(MIRROR_ENV, "").strip()
    return [own, *PUBLIC_MIRRORS] if own else list(PUBLIC_MIRRORS)


def fetch(dest: str | Path, mirrors: Sequence[str], files: Mapping[str, str] = MNIST_FILES) -> dict[str, str]:
    """Make `dest` hold every file in `files` with its md5; return where each one came from."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    origins = {}
    for name, md5 in files.items():
        target = dest / name
        if target.exists() and digest(target, "md5") == md5:
            origins[name] = "already present"
            continue
        target.unlink(missing_ok=True)  # a wrong file must not outlive a failed fetch either
        origins[name] = _fetch_one(name, md5, target, mirrors)
    return origins


def _fetch_one(name: str, md5: str, target: Path, mirrors: Sequence[str]) -> str:
    failures = []
    for mirror in mirrors:
        source = _join(mirror, name)
        try:
            # The file takes its real name only once its checksum matched.
            with atomic_path(target) as tmp:
                actual = _download(source, tmp)
                if actual != md5:
                    raise ValueError(f"checksum mismatch: md5 {actual}, expected {md5}")
            return source
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            failures.append(f"{source}: {exc}")
    tried = "\n  ".join(failures)
    raise FetchError(
        f"could not fetch {name}; tried:\n  {tried}\n"
        f"Set {MIRROR_ENV} to a folder or an http(s) URL that holds the official MNIST files, "
        f"e.g. export {MIRROR_ENV}=/path/to/mnist"
    )


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
