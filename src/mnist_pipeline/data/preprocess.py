"""Any digit image to the model's input, by MNIST's own recipe: grey, light ink on black, 20 px, centred by mass.

Pure PIL and numpy (no torch), shared by `predict` and the drawing demo, so both see a digit alike.
"""

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.errors import ImageError, brief

# Only these decoders run: Pillow's others include formats that hand the file to external
# programs (EPS to Ghostscript), which an image from anywhere should never reach.
FORMATS = ("PNG", "JPEG")
DIGIT_BOX = 20  # MNIST scaled each digit so that its longer side is 20 px
# Where MNIST puts the centre of mass, in pixel indices (row, column): measured over the 10,000
# test digits, (13.99, 14.01); the geometric centre of 28 pixels would be 13.5.
CENTRE = 14
# Grey levels (of 255) that a pixel must differ from the background by to count as ink: above
# JPEG's ringing and paper texture, far below a pen stroke. An image with no such pixel is blank.
INK_LEVEL = 32


def load(path: str | Path) -> np.ndarray:
    """The prepared digit of a PNG or JPEG file; ImageError names the file and what is wrong."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return from_bytes(data)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def from_bytes(data: bytes) -> np.ndarray:
    """The prepared digit of an encoded PNG or JPEG image (a file's bytes, or the demo's drawing)."""
    try:
        with warnings.catch_warnings():
            # Above Pillow's size limit it warns, and refuses at twice the limit: an error either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            image.load()  # a truncated or damaged file shows only while its pixels are decoded
    except UnidentifiedImageError:
        raise ImageError("not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"not a readable image ({brief(exc)})") from None
    return prepare(image)


def prepare(image: Image.Image) -> np.ndarray:
    """(28, 28) float32 in [0, 1], light ink on black: the pixels the model was trained on."""
    image = ImageOps.exif_transpose(image)  # phone photos store their rotation beside the pixels
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent parts show as the page behind them, white, as in an image viewer.
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    grey = np.asarray(image.convert("L"), dtype=np.float32)

    # The background is what most of the outermost pixels show; MNIST's ink is light on black.
    background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    if background > 127:
        grey, background = 255 - grey, 255 - background
    ink = grey - background
    strongest = float(ink.max())
    if strongest <= INK_LEVEL:
        raise ImageError(
            f"blank image: no pixel differs from the background by more than {INK_LEVEL} of 255 grey levels"
        )
    # Fainter pixels are noise; the rest is stretched so the strongest ink is 1, as in MNIST.
    ink = np.where(ink > INK_LEVEL, ink / strongest, 0).astype(np.float32)

    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return centre(scale(ink))


def scale(ink: np.ndarray) -> np.ndarray:
    """Resize so the longer side is DIGIT_BOX pixels, keeping the aspect ratio."""
    height, width = ink.shape
    factor = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # Pillow's bilinear filter widens with the reduction, so shrinking averages (anti-aliases) as
    # MNIST's own scaling did, rather than sampling one source pixel in many.
    small = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BILINEAR))
    # A thin stroke averaged into few pixels would come out faint; MNIST's ink peaks at 1.
    return np.clip(small / small.max(), 0, 1)


def centre(digit: np.ndarray) -> np.ndarray:
    """Place `digit` in a black 28x28 field with its centre of mass at (CENTRE, CENTRE)."""
    height, width = digit.shape
    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    row, col = (rows * digit).sum() / mass, (cols * digit).sum() / mass
    # Clamped so that a lopsided digit keeps all its ink rather than its exact centre.
    top = min(max(round(CENTRE - row), 0), IMAGE_SHAPE[0] - height)
    left = min(max(round(CENTRE - col), 0), IMAGE_SHAPE[1] - width)
    field = np.zeros(IMAGE_SHAPE, dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field
