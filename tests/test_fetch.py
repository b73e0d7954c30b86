"""The download step: checksums verified for every source, nothing unverified left under data/."""

import dataclasses
import functools
import gzip
import http.server
import threading
from pathlib import Path

import pytest

from mnist_pipeline.data.catalog import DATASETS, FASHION_MNIST, MNIST, Dataset
from mnist_pipeline.data.fetch import fetch, mirrors_from_env
from mnist_pipeline.errors import FetchError
from mnist_pipeline.files import digest
from mnist_pipeline.stages import download

from support.synthetic import write_synthetic_mnist
from support.tiny import write_tiny_params
from support.tools import FASHION_MNIST_MIRROR, MNIST_MIRROR

UNREACHABLE = "http://127.0.0.1:9/mnist/"  # the discard port: connection refused at once


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, Dataset]:
    """A folder of synthetic MNIST files, and MNIST's description with their md5s as the official ones."""
    folder = write_synthetic_mnist(tmp_path / "mirror")
    return folder, dataclasses.replace(MNIST, files={p.name: digest(p, "md5") for p in sorted(folder.iterdir())})


@pytest.fixture
def bad_mirror(tmp_path: Path, mirror) -> Path:
    """A folder with every file of `mirror` under its name, but the wrong content."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in mirror[1].files:
        (folder / name).write_bytes(b"not mnist")
    return folder


@pytest.fixture
def http_mirror(mirror):
    """The same folder served over real HTTP on a loopback port."""
    folder, dataset = mirror
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", dataset
    server.shutdown()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(("dataset", "name"), [(MNIST, "MNIST"), (FASHION_MNIST, "FashionMNIST")])
def test_files_and_mirrors_are_torchvisions(dataset, name):
    import torchvision.datasets

    reference = getattr(torchvision.datasets, name)
    assert dict(reference.resources) == dataset.files
    assert set(reference.mirrors) <= set(dataset.public_mirrors) and len(dataset.classes) == 10


def test_params_accept_exactly_the_known_datasets():
    from mnist_pipeline.config import DataConfig

    assert set(DataConfig.__annotations__["dataset"].__args__) == set(DATASETS)


def test_users_own_source_is_tried_first():
    assert mirrors_from_env(MNIST, {"MNIST_MIRROR": "/srv/mnist"}) == ["/srv/mnist", *MNIST.public_mirrors]
    assert mirrors_from_env(MNIST, {"FASHION_MNIST_MIRROR": "/srv/f"}) == list(MNIST.public_mirrors)
    assert mirrors_from_env(FASHION_MNIST, {"FASHION_MNIST_MIRROR": "/srv/f"})[0] == "/srv/f"


def test_fetch_from_local_folder(tmp_path, mirror):
    folder, dataset = mirror
    origins = fetch(dataset, tmp_path / "data", [str(folder)])
    assert leftovers(tmp_path / "data") == sorted(dataset.files)
    assert origins == {name: str(folder / name) for name in dataset.files}
    # Verified files are kept on the next run; nothing is fetched again.
    assert set(fetch(dataset, tmp_path / "data", [UNREACHABLE]).values()) == {"already present"}


def test_fetch_over_http(tmp_path, http_mirror):
    url, dataset = http_mirror
    fetch(dataset, tmp_path / "data", [url])
    assert {p.name: digest(p, "md5") for p in (tmp_path / "data").iterdir()} == dataset.files


def test_bad_checksum_falls_back_to_next_mirror(tmp_path, mirror, bad_mirror):
    folder, dataset = mirror
    origins = fetch(dataset, tmp_path / "data", [str(bad_mirror), str(folder)])
    assert all(origin.startswith(str(folder)) for origin in origins.values())
    assert leftovers(tmp_path / "data") == sorted(dataset.files)


def test_bad_checksum_everywhere_leaves_nothing_and_a_good_source_then_works(tmp_path, mirror, bad_mirror):
    good, dataset = mirror
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as caught:
        fetch(dataset, dest, [str(bad_mirror), UNREACHABLE])
    message = str(caught.value)
    first = next(iter(dataset.files))
    assert f"could not fetch {first}" in message
    assert f"{bad_mirror / first}: checksum mismatch" in message
    assert UNREACHABLE + first in message and "MNIST_MIRROR" in message
    assert leftovers(dest) == []  # no wrong file, no temporary file
    fetch(dataset, dest, [str(good)])  # no cleanup needed first
    assert leftovers(dest) == sorted(dataset.files)


@pytest.fixture
def data_with_a_wrong_file(tmp_path, mirror) -> tuple[Path, str]:
    """data/ holding the first file under its name, truncated, as a crash might leave it."""
    dest = tmp_path / "data"
    dest.mkdir()
    name = next(iter(mirror[1].files))
    (dest / name).write_bytes(b"truncated")
    return dest, name


def test_wrong_file_already_in_data_is_replaced(mirror, data_with_a_wrong_file):
    (folder, dataset), (dest, name) = mirror, data_with_a_wrong_file
    fetch(dataset, dest, [str(folder)])
    assert digest(dest / name, "md5") == dataset.files[name]


def test_wrong_file_is_removed_even_when_no_source_works(mirror, data_with_a_wrong_file):
    dest, _ = data_with_a_wrong_file
    with pytest.raises(FetchError, match="could not fetch"):
        fetch(mirror[1], dest, [UNREACHABLE])
    assert leftovers(dest) == []


def test_missing_file_on_mirror_is_named(tmp_path, mirror):
    folder, dataset = mirror
    name = next(iter(dataset.files))
    (folder / name).unlink()
    with pytest.raises(FetchError, match=f"{folder / name}: .*No such file"):
        fetch(dataset, tmp_path / "data", [str(folder)])


def normalised_gzip(path: Path) -> bytes:
    """The file as Debian's packaging rewrites it: no file name in the header, the packager's time."""
    data = path.read_bytes()
    assert data[3] == 0x08  # the published files carry their name
    end_of_name = data.index(b"\0", 10) + 1
    return b"\x1f\x8b\x08\x00" + (1591347949).to_bytes(4, "little") + data[8:10] + data[end_of_name:]


def test_a_normalised_gzip_header_is_restored_to_the_published_bytes(tmp_path):
    # Files made as the published ones were (name and time in the header), then normalised.
    originals, packaged = tmp_path / "originals", tmp_path / "packaged"
    write_synthetic_mnist(originals)
    packaged.mkdir()
    mtimes, files = {}, {}
    for i, path in enumerate(sorted(originals.iterdir())):
        raw = gzip.decompress(path.read_bytes())
        with gzip.GzipFile(
            path.name.removesuffix(".gz"), "wb", fileobj=(out := path.open("wb")), mtime=1504176606 + i
        ) as gz:
            gz.write(raw)
        out.close()
        mtimes[path.name], files[path.name] = 1504176606 + i, digest(path, "md5")
        (packaged / path.name).write_bytes(normalised_gzip(path))
    dataset = dataclasses.replace(FASHION_MNIST, files=files, gzip_mtimes=mtimes)
    origins = fetch(dataset, tmp_path / "data", [str(packaged)])
    assert all(origin.endswith("its gzip header restored as published") for origin in origins.values())
    assert {p.name: digest(p, "md5") for p in (tmp_path / "data").iterdir()} == files
    # A time that does not give the published md5 restores nothing: the file is refused.
    wrong = dataclasses.replace(dataset, gzip_mtimes={name: t + 1 for name, t in mtimes.items()})
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch(wrong, tmp_path / "elsewhere", [str(packaged)])


def test_download_stage_reports_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(MNIST, public_mirrors=(UNREACHABLE,)))
    write_tiny_params(tmp_path / "params.yaml")
    assert download.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not fetch train-images-idx3-ubyte.gz; tried:")
    assert "Set MNIST_MIRROR" in err
    assert leftovers(tmp_path / "data") == []


def test_download_stage_refuses_an_unknown_dataset(tmp_path, capsys):
    write_tiny_params(tmp_path / "params.yaml", dataset="emnist")
    assert download.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "data")]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'params.yaml'}: data.dataset = 'emnist': expected one of mnist, fashion-mnist\n"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.real_data
@pytest.mark.parametrize(("dataset", "mirror"), [(MNIST, MNIST_MIRROR), (FASHION_MNIST, FASHION_MNIST_MIRROR)])
def test_download_stage_fetches_the_official_files(tmp_path, capsys, monkeypatch, dataset, mirror):
    if not mirror:
        pytest.skip(f"needs {dataset.mirror_env} (the real {dataset.name} files)")
    monkeypatch.setenv(dataset.mirror_env, mirror)
    write_tiny_params(tmp_path / "params.yaml", dataset=dataset.name)
    assert download.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "data")]) == 0
    assert {p.name: digest(p, "md5") for p in (tmp_path / "data").iterdir()} == dataset.files
    assert capsys.readouterr().out.count("md5 verified") == 4
