"""The datasets a run can use: their official files and checksums, where to fetch them, their classes."""

from dataclasses import dataclass, field

# Every dataset here: 28x28 grey images of one of 10 classes (no torch here: preprocess shares these).
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class Dataset:
    name: str  # as params.yaml's data.dataset names it, and the folder under data/
    files: dict[str, str]  # file name -> md5 of the official file
    mirror_env: str  # the user's own source (a folder or an http(s) URL), tried first
    public_mirrors: tuple[str, ...]
    classes: tuple[str, ...]  # label i is classes[i]
    # The published files' gzip timestamps, for copies whose packagers normalised the gzip header
    # (Debian's dataset-fashion-mnist drops the file name and sets its own time): putting the
    # name and time back gives the published bytes, which must then match the published md5.
    gzip_mtimes: dict[str, int] = field(default_factory=dict)


MNIST = Dataset(
    name="mnist",
    # Exactly as torchvision.datasets.MNIST lists them (a test checks).
    files={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    mirror_env="MNIST_MIRROR",
    public_mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    classes=tuple("0123456789"),
)

FASHION_MNIST = Dataset(
    name="fashion-mnist",
    # Zalando's published md5s, the same as torchvision.datasets.FashionMNIST's (a test checks).
    files={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    mirror_env="FASHION_MNIST_MIRROR",
    public_mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # Found by restoring the header with each second of 2017 until the md5 matched (2017-08-31).
    gzip_mtimes={
        "train-images-idx3-ubyte.gz": 1504176606,
        "train-labels-idx1-ubyte.gz": 1504176606,
        "t10k-images-idx3-ubyte.gz": 1504176627,
        "t10k-labels-idx1-ubyte.gz": 1504176627,
    },
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
