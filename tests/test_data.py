"""Raw IDX files load once into tensors with ToTensor's values; malformed files are named."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.errors import DataError

from support.synthetic import synthetic_split, write_idx
from support.tools import MNIST_MIRROR


def test_split_shapes_and_values(tiny_mnist):
    split = load_split(tiny_mnist, train=True)
    images, labels = synthetic_split(512, seed=1)
    assert split.images.shape == (512, 1, 28, 28) and split.images.dtype == torch.float32
    assert split.labels.dtype == torch.int64 and len(split) == 512
    assert torch.equal(split.images[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(split.labels, torch.from_numpy(labels).long())


def test_same_tensors_as_torchvision_to_tensor(tiny_mnist, tmp_path):
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in tiny_mnist.iterdir():  # torchvision reads the decompressed files
        (raw / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    reference = MNIST(str(tmp_path / "tv"), train=False, transform=ToTensor())
    ours = load_split(tiny_mnist, train=False)
    for i in (0, 1, len(ours) - 1):
        image, label = reference[i]
        assert torch.equal(ours.images[i], image) and ours.labels[i].item() == label


def replace(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_missing_file(tiny_mnist):
    (tiny_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: file not found; run `dvc repro download`"):
        load_split(tiny_mnist, train=False)


def test_truncated_gzip(tiny_mnist):
    path = tiny_mnist / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        load_split(tiny_mnist, train=False)


def test_not_gzip_at_all(tiny_mnist):
    replace(tiny_mnist, "t10k-images-idx3-ubyte.gz", b"<html>404</html>")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        load_split(tiny_mnist, train=False)


def test_wrong_magic_number(tiny_mnist):
    images, _ = synthetic_split(256, seed=2)
    write_idx(tiny_mnist / "t10k-images-idx3-ubyte.gz", images, 2049)  # labels' magic on images
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: wrong IDX magic number 2049, expected 2051"):
        load_split(tiny_mnist, train=False)


def test_header_and_data_disagree(tiny_mnist):
    header = (2049).to_bytes(4, "big") + (300).to_bytes(4, "big")
    replace(tiny_mnist, "t10k-labels-idx1-ubyte.gz", gzip.compress(header + bytes(100)))
    with pytest.raises(DataError, match=r"header says \[300\] but the file holds 100 data bytes"):
        load_split(tiny_mnist, train=False)


def test_count_of_images_and_labels_differ(tiny_mnist):
    write_idx(tiny_mnist / "t10k-labels-idx1-ubyte.gz", np.zeros(255, np.uint8), 2049)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: 256 images but t10k-labels-idx1-ubyte.gz has 255"):
        load_split(tiny_mnist, train=False)


def test_images_of_another_size(tiny_mnist):
    write_idx(tiny_mnist / "t10k-images-idx3-ubyte.gz", np.zeros((256, 32, 32), np.uint8), 2051)
    with pytest.raises(DataError, match=r"images of \(32, 32\) pixels, expected \(28, 28\)"):
        load_split(tiny_mnist, train=False)


def test_label_out_of_range(tiny_mnist):
    write_idx(tiny_mnist / "t10k-labels-idx1-ubyte.gz", np.full(256, 11, np.uint8), 2049)
    with pytest.raises(DataError, match=r"label 11 outside 0..9"):
        load_split(tiny_mnist, train=False)


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_MIRROR, reason="needs MNIST_MIRROR (real MNIST files)")
def test_real_mnist_sizes():
    train, test = load_split(MNIST_MIRROR, train=True), load_split(MNIST_MIRROR, train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
