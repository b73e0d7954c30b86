"""What the served model accepts, checked: MNIST-prepared pixels, or PNG/JPEG images as base64 text
prepared by data/preprocess.py as `predict` prepares files. Each refusal is one ImageError that says why."""

import base64
import binascii

import numpy as np
import pandas as pd

from mnist_pipeline.data import preprocess
from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.errors import ImageError

COLUMN = "image"  # {"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}
SHAPE = (1, *IMAGE_SHAPE)  # each image's pixels: (1, 28, 28)


def images(model_input: pd.DataFrame | np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) float32 pixels in [0, 1] from a table of encoded images or from pixels."""
    if isinstance(model_input, pd.DataFrame):
        return decoded(model_input)
    return checked(np.asarray(model_input))


def decoded(table: pd.DataFrame) -> np.ndarray:
    """Each row's image: base64 PNG or JPEG, prepared as `predict` prepares a file."""
    if list(table.columns) != [COLUMN]:
        raise ImageError(
            f"a table of images has one column, {COLUMN!r} (base64 PNG or JPEG); got {list(table.columns)}"
        )
    if table.empty:
        raise ImageError("no images: the table has no rows")
    prepared = []
    for number, text in enumerate(table[COLUMN], 1):
        where = f"image {number} of {len(table)}"
        if not isinstance(text, str):
            raise ImageError(f"{where}: not base64 text but {type(text).__name__}")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError(f"{where}: not valid base64") from None
        try:
            prepared.append(preprocess.from_bytes(data))
        except ImageError as exc:
            raise ImageError(f"{where}: {exc}") from None
    return np.stack(prepared)[:, None]


def checked(pixels: np.ndarray) -> np.ndarray:
    """Pixels as the model takes them, or why not: shape (N, 1, 28, 28), finite numbers in [0, 1]."""
    if pixels.dtype.kind not in "biuf":
        raise ImageError(
            f"pixel values must be numbers, got {pixels.dtype.name} values; send encoded images "
            f"as base64 in a table's {COLUMN!r} column"
        )
    if pixels.ndim != 4 or pixels.shape[1:] != SHAPE or not len(pixels):
        raise ImageError(f"pixels must have the shape (N, 1, 28, 28), N at least 1; got {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ImageError(f"pixel values must be finite; found {pixels[~np.isfinite(pixels)].flat[0]}")
    low, high = pixels.min(), pixels.max()
    if low < 0 or high > 1:
        raise ImageError(f"pixel values must be in [0, 1] (MNIST-prepared); found {low if low < 0 else high:g}")
    return pixels.astype(np.float32, copy=False)
