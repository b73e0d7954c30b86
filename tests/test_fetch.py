"""The download step: checksums verified for every source, nothing unverified left under data/."""

import functools
import http.server
import threading
from pathlib import Path

import pytest

from mnist_pipeline.errors import FetchError
from mnist_pipeline.fetch import MIRROR_ENV, MNIST_FILES, PUBLIC_MIRRORS, fetch, mirrors_from_env
from mnist_pipeline.files import digest
from mnist_pipeline.stages import download

from conftest import MNIST_MIRROR, write_synthetic_mnist

UNREACHABLE = "http://127.0.0.1:9/mnist/"  # the discard port: connection refused at once


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder of synthetic MNIST files and their md5s, standing in for the official ones."""
    folder = write_synthetic_mnist(tmp_path / "mirror")
    return folder, {p.name: digest(p, "md5") for p in sorted(folder.iterdir())}


@pytest.fixture
def bad_mirror(tmp_path: Path, mirror) -> Path:
    """A folder with every file of `mirror` under its name, but the wrong content."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in mirror[1]:
        (folder / name).write_bytes(b"not mnist")
    return folder


@pytest.fixture
def http_mirror(mirror):
    """The same folder served over real HTTP on a loopback port."""
    folder, files = mirror
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", files
    server.shutdown()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_constants_are_torchvisions():
    from torchvision.datasets import MNIST

    assert dict(MNIST.resources) == MNIST_FILES
    assert tuple(MNIST.mirrors) == PUBLIC_MIRRORS


def test_user_mirror_is_tried_first():
    assert mirrors_from_env({MIRROR_ENV: "/srv/mnist"}) == ["/srv/mnist", *PUBLIC_MIRRORS]
    assert mirrors_from_env({}) == list(PUBLIC_MIRRORS)


def test_fetch_from_local_folder(tmp_path, mirror):
    folder, files = mirror
    origins = fetch(tmp_path / "data", [str(folder)], files)
    assert leftovers(tmp_path / "data") == sorted(files)
    assert origins == {name: str(folder / name) for name in files}
    # Verified files are kept on the next run; nothing is fetched again.
    assert set(fetch(tmp_path / "data", [UNREACHABLE], files).values()) == {"already present"}


def test_fetch_over_http(tmp_path, http_mirror):
    url, files = http_mirror
    fetch(tmp_path / "data", [url], files)
    assert {p.name: digest(p, "md5") for p in (tmp_path / "data").iterdir()} == files


def test_bad_checksum_falls_back_to_next_mirror(tmp_path, mirror, bad_mirror):
    folder, files = mirror
    origins = fetch(tmp_path / "data", [str(bad_mirror), str(folder)], files)
    assert all(origin.startswith(str(folder)) for origin in origins.values())
    assert leftovers(tmp_path / "data") == sorted(files)


def test_bad_checksum_everywhere_leaves_nothing_and_a_good_source_then_works(tmp_path, mirror, bad_mirror):
    good, files = mirror
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as caught:
        fetch(dest, [str(bad_mirror), UNREACHABLE], files)
    message = str(caught.value)
    first = next(iter(files))
    assert f"could not fetch {first}" in message
    assert f"{bad_mirror / first}: checksum mismatch" in message
    assert UNREACHABLE + first in message and MIRROR_ENV in message
    assert leftovers(dest) == []  # no wrong file, no temporary file
    fetch(dest, [str(good)], files)  # no cleanup needed first
    assert leftovers(dest) == sorted(files)


@pytest.fixture
def data_with_a_wrong_file(tmp_path, mirror) -> tuple[Path, str]:
    """data/ holding the first file under its name, truncated, as a crash might leave it."""
    dest = tmp_path / "data"
    dest.mkdir()
    name = next(iter(mirror[1]))
    (dest / name).write_bytes(b"truncated")
    return dest, name


def test_wrong_file_already_in_data_is_replaced(mirror, data_with_a_wrong_file):
    (folder, files), (dest, name) = mirror, data_with_a_wrong_file
    fetch(dest, [str(folder)], files)
    assert digest(dest / name, "md5") == files[name]


def test_wrong_file_is_removed_even_when_no_source_works(mirror, data_with_a_wrong_file):
    dest, _ = data_with_a_wrong_file
    with pytest.raises(FetchError, match="could not fetch"):
        fetch(dest, [UNREACHABLE], mirror[1])
    assert leftovers(dest) == []


def test_missing_file_on_mirror_is_named(tmp_path, mirror):
    folder, files = mirror
    name = next(iter(files))
    (folder / name).unlink()
    with pytest.raises(FetchError, match=f"{folder / name}: .*No such file"):
        fetch(tmp_path / "data", [str(folder)], files)


def test_download_stage_reports_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr("mnist_pipeline.fetch.PUBLIC_MIRRORS", (UNREACHABLE,))
    assert download.main(["--out", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not fetch train-images-idx3-ubyte.gz; tried:")
    assert "Set MNIST_MIRROR" in err
    assert leftovers(tmp_path / "data") == []


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_MIRROR, reason="needs MNIST_MIRROR (real MNIST files)")
def test_download_stage_fetches_the_official_files(tmp_path, capsys):
    assert download.main(["--out", str(tmp_path / "data")]) == 0
    assert {p.name: digest(p, "md5") for p in (tmp_path / "data").iterdir()} == MNIST_FILES
    assert capsys.readouterr().out.count("md5 verified") == 4
