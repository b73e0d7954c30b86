"""What the served model takes, in-process: pixels checked, images decoded as predict decodes a file."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from mnist_pipeline.data import preprocess
from mnist_pipeline.errors import ImageError
from mnist_pipeline.serving import inputs


def png(width: int = 14) -> bytes:
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(50, 35), (150, 35), (85, 175)], fill="black", width=width)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def table(*files: bytes | str) -> pd.DataFrame:
    return pd.DataFrame({"image": [f if isinstance(f, str) else base64.b64encode(f).decode() for f in files]})


def test_images_are_prepared_as_predict_prepares_a_file():
    pixels = inputs.images(table(png(), png(6)))
    assert pixels.shape == (2, 1, 28, 28) and pixels.dtype == np.float32
    assert np.array_equal(pixels[1, 0], preprocess.from_bytes(png(6)))


def test_good_pixels_pass_as_float32():
    pixels = inputs.images(np.zeros((3, 1, 28, 28)) + 0.5)  # JSON's numbers arrive as float64
    assert pixels.dtype == np.float32 and pixels.shape == (3, 1, 28, 28)


@pytest.mark.parametrize(
    "pixels, message",
    [
        (np.full((1, 1, 28, 28), 1e30), r"must be in \[0, 1\] \(MNIST-prepared\); found 1e\+30"),
        (np.full((1, 1, 28, 28), -0.5), r"must be in \[0, 1\] \(MNIST-prepared\); found -0.5"),
        (np.full((1, 1, 28, 28), np.nan), r"must be finite; found nan"),
        (np.full((1, 1, 28, 28), np.inf), r"must be finite; found inf"),
        (np.zeros((2, 28, 28)), r"shape \(N, 1, 28, 28\), N at least 1; got \(2, 28, 28\)"),
        (np.zeros((0, 1, 28, 28)), r"N at least 1; got \(0, 1, 28, 28\)"),
        (np.array([[["a"]]]), r"pixel values must be numbers, got str"),
    ],
    ids=["huge", "negative", "nan", "inf", "shape", "none", "strings"],
)
def test_bad_pixels_are_refused_with_one_message(pixels, message):
    with pytest.raises(ImageError, match=message):
        inputs.images(pixels)


@pytest.mark.parametrize(
    "rows, message",
    [
        (table(png(), b"GIF89a..."), r"^image 2 of 2: not a PNG or JPEG image$"),
        (table(png()[:300]), r"^image 1 of 1: not a readable image"),
        (table("%%% not base64"), r"^image 1 of 1: not valid base64$"),
        (pd.DataFrame({"img": ["x"]}), r"one column, 'image' \(base64 PNG or JPEG\); got \['img'\]"),
        (pd.DataFrame({"image": [7]}), r"^image 1 of 1: not base64 text but int$"),
        (table(), r"no images: the table has no rows"),
    ],
    ids=["not-an-image", "truncated", "not-base64", "other-column", "not-text", "empty"],
)
def test_bad_images_are_refused_with_one_message(rows, message):
    with pytest.raises(ImageError, match=message):
        inputs.images(rows)
