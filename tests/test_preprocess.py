"""MNIST's recipe on any image: grey, light ink on black, cropped, 20 px, centred by mass; blank refused."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_pipeline.data import preprocess
from mnist_pipeline.errors import ImageError

from support.digits import as_scanned


def bar(width: int = 60, height: int = 180, ink: str = "black", paper: str = "white", mode: str = "RGB") -> Image.Image:
    """A filled upright bar, like a thick 1, off-centre on a 400x300 page."""
    image = Image.new(mode, (400, 300), paper)
    ImageDraw.Draw(image).rectangle([40, 70, 40 + width - 1, 70 + height - 1], fill=ink)
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(pixels.shape)
    return (rows * pixels).sum() / pixels.sum(), (cols * pixels).sum() / pixels.sum()


def ink_box(pixels: np.ndarray) -> tuple[int, int]:
    """Height and width of the box around the nonzero pixels."""
    rows, cols = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_longer_side_20_px_aspect_kept_centred_by_mass():
    pixels = preprocess.prepare(bar(60, 180))
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32
    assert pixels.min() == 0 and pixels.max() == 1
    assert ink_box(pixels) == (20, 7)  # 180x60 scaled by 20/180: 20x6.7
    assert centre_of_mass(pixels) == pytest.approx((14, 14), abs=0.5)
    assert pixels[[0, 0, -1, -1], [0, -1, 0, -1]].tolist() == [0, 0, 0, 0]  # black background

    wide = preprocess.prepare(bar(180, 45))  # lying down: the width is the longer side
    assert ink_box(wide) == (5, 20)
    assert centre_of_mass(wide) == pytest.approx((14, 14), abs=0.5)


def test_small_images_are_enlarged_to_20_px():
    tiny = Image.new("L", (12, 12), 255)
    ImageDraw.Draw(tiny).line([(6, 2), (6, 9)], fill=0, width=2)  # 8 px tall
    assert ink_box(preprocess.prepare(tiny))[0] == 20


def test_a_thin_pen_in_a_large_scan_keeps_full_strength_ink():
    scan = Image.new("L", (900, 1200), 255)
    ImageDraw.Draw(scan).ellipse([150, 100, 750, 1100], outline=0, width=3)  # shrunk 50x: 0.06 px wide
    pixels = preprocess.prepare(scan)
    assert ink_box(pixels) == (20, 12) and pixels.max() == 1


@pytest.mark.parametrize(
    "ink, paper, mode",
    [
        ("white", "black", "RGB"),  # light on dark, as MNIST stores it
        ("#14206e", "#faf4e1", "RGB"),  # navy pen on cream paper
        ("#ebebb4", "#1e4628", "RGB"),  # chalk on a green board
        (0, 255, "L"),  # greyscale
    ],
)
def test_same_digit_whatever_the_colours(ink, paper, mode):
    reference = preprocess.prepare(bar())
    assert np.allclose(preprocess.prepare(bar(ink=ink, paper=paper, mode=mode)), reference, atol=0.02)


def test_jpeg_artefacts_are_not_ink():
    reference = preprocess.prepare(bar())
    jpeg = preprocess.from_bytes(encoded(bar(), "JPEG", quality=60))
    assert ink_box(jpeg) == ink_box(reference)  # ringing around the edges is not cropped in
    assert np.abs(jpeg - reference).mean() < 0.02


def test_transparent_background_counts_as_white_paper():
    drawing = Image.new("RGBA", (400, 300), (0, 0, 0, 0))  # a canvas's "empty" is transparent black
    ImageDraw.Draw(drawing).rectangle([40, 70, 99, 249], fill=(0, 0, 0, 255))
    assert np.allclose(preprocess.from_bytes(encoded(drawing, "PNG")), preprocess.prepare(bar()), atol=0.02)


def test_a_photo_is_turned_upright_as_its_exif_says():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned, show the pixels rotated 90 degrees
    upright = preprocess.from_bytes(encoded(bar(60, 180), "JPEG", quality=95, exif=exif))
    assert ink_box(upright) == (7, 20)


@pytest.mark.parametrize("paper", [0, 255, 128])
def test_uniform_image_is_blank(paper):
    blank = r"^blank image: no pixel differs from the background by more than 32 of 255 grey levels$"
    with pytest.raises(ImageError, match=blank):
        preprocess.prepare(Image.new("L", (64, 48), paper))


def test_blank_means_no_pixel_more_than_32_levels_from_the_background():
    noisy = np.random.default_rng(0).integers(200 - 16, 200 + 17, (48, 64)).astype(np.uint8)  # paper texture
    noisy[[0, -1]], noisy[:, [0, -1]] = 200, 200  # the background: the median of the outermost pixels
    faint, visible = noisy.copy(), noisy.copy()
    faint[20:30, 30] = 200 - 32
    visible[20:30, 30] = 200 - 33
    for image in (noisy, faint):
        with pytest.raises(ImageError, match="^blank image"):
            preprocess.prepare(Image.fromarray(image))
    assert ink_box(preprocess.prepare(Image.fromarray(visible)))[0] == 20  # the mark alone, scaled


@pytest.mark.parametrize(
    "data, message",
    [
        (b"hello", r"^not a PNG or JPEG image$"),
        (encoded(bar(), "PNG")[:300], r"^not a readable image \(.*truncated.*\)$"),
        (encoded(bar(), "GIF"), r"^not a PNG or JPEG image$"),  # Pillow reads it, but only PNG and JPEG are let in
    ],
)
def test_unreadable_bytes(data, message):
    with pytest.raises(ImageError, match=message):
        preprocess.from_bytes(data)


# --- Real test digits: the recipe gives back what MNIST itself made of them ---

TRANSFORMS = {
    "scaled": dict(scale=True, shift=False),
    "off-centre": dict(scale=False, shift=True),
    "inverted": dict(scale=False, shift=False, dark_ink=True),
    "in colour": dict(scale=False, shift=False, colour=True),
    "all of these": dict(colour=True, dark_ink=True),
}


@pytest.mark.real_data
@pytest.mark.parametrize("jpeg", [False, True], ids=["png", "jpeg"])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_real_digits_come_back_as_mnist_has_them(real_digits, transform, jpeg):
    images, _ = real_digits
    defaults = dict(scale=False, shift=False, dark_ink=False, colour=False)
    likeness = []
    for i, digit in enumerate(images):
        image = as_scanned(digit, seed=i, **{**defaults, **TRANSFORMS[transform]})
        pixels = preprocess.from_bytes(encoded(image, "JPEG", quality=80) if jpeg else encoded(image, "PNG"))
        likeness.append(np.corrcoef(pixels.ravel(), digit.ravel())[0, 1])
    # MNIST's digits are already prepared this way, so the result matches them up to resampling
    # blur and one-pixel shifts of the centre of mass (each one costs thin strokes some overlap).
    assert np.mean(likeness) > 0.9, (transform, np.round(likeness, 2))
