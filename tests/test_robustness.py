"""The robustness report: fixed, seeded distortions of the test set, each with the geometry its name says."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from mnist_pipeline.data import preprocess
from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.data.splits import Split, load_split
from mnist_pipeline.errors import ImageError
from mnist_pipeline.evaluation import robustness
from mnist_pipeline.training import augment

from support.synthetic import known_image
from support.tools import MNIST_MIRROR


def batch(n: int = 4) -> torch.Tensor:
    """`n` copies of the known shape, moved to the middle: a shift or a scale keeps it all in view."""
    return torch.roll(known_image(), (6, 4), (2, 3)).repeat(n, 1, 1, 1)


def test_rotations_alternate_their_direction():
    turned = robustness.rotate(90)(batch())
    assert torch.allclose(turned[0::2], torch.rot90(batch(2), 1, (2, 3)), atol=1e-5)  # counter-clockwise
    assert torch.allclose(turned[1::2], torch.rot90(batch(2), -1, (2, 3)), atol=1e-5)


def test_shift_moves_right_down_left_up_in_turn():
    moved = robustness.shift(4)(batch())
    for i, (rows, cols) in enumerate([(0, 4), (4, 0), (0, -4), (-4, 0)]):
        assert torch.allclose(moved[i], torch.roll(batch(1)[0], (rows, cols), (1, 2)), atol=1e-5)


def test_scale_shrinks_the_ink_by_the_square_of_the_factor():
    ink = batch(1).sum().item()
    assert robustness.scale(0.7)(batch(1)).sum().item() == pytest.approx(ink * 0.49, rel=0.05)
    assert robustness.scale(1.3)(batch(1)).sum().item() == pytest.approx(ink * 1.69, rel=0.05)


def test_thicker_and_thinner_strokes_by_one_pixel_each_way():
    line = torch.zeros(1, 1, *IMAGE_SHAPE)
    line[0, 0, 5:20, 10:13] = 1.0  # 3 px wide, 15 tall
    assert (augment.thicker(line)[0, 0, 12] > 0).sum() == 5
    assert (augment.thinner(line)[0, 0, 12] > 0).sum() == 1
    assert torch.equal(augment.thinner(augment.thicker(line)), line)  # a closing keeps a straight bar


def test_blur_low_resolution_and_noise_keep_the_ink_and_the_range():
    images = batch()
    for distort in (robustness.blur, robustness.low_resolution(14), robustness.low_resolution(10)):
        out = distort(images)
        assert out.shape == images.shape and not torch.equal(out, images)
        assert out.sum().item() == pytest.approx(images.sum().item(), rel=0.05)  # spread, not lost
    noisy = robustness.noise(images)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert (noisy - images).std().item() == pytest.approx(robustness.NOISE, rel=0.4)  # clipped at 0 and 1
    assert torch.equal(noisy, robustness.noise(images))  # seeded: the same grain for every model


def test_digits_on_a_canvas_come_back_through_preprocess():
    digit = torch.zeros(2, 1, *IMAGE_SHAPE)
    digit[:, 0, 4:24, 12:16] = 1.0  # a "1", 20 px tall as MNIST draws its digits, centred
    for name in ("canvas_small", "canvas_large"):
        back = robustness.DISTORTIONS[name](digit)
        assert back.shape == digit.shape
        overlap = (back * digit).sum() / (back.norm() * digit.norm())
        assert overlap > 0.8, name  # the same stroke, where MNIST puts it, whatever the page did


def strokes(n: int = 300) -> torch.Tensor:
    """(n, 1, 28, 28) varied ink: bars and blocks of any width, height and grey, some faint, some blank."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, *IMAGE_SHAPE), np.float32)
    for image in images[2:]:  # the first two stay blank
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, 27, 2)
            height, width = rng.integers(1, 28 - top), rng.integers(1, 28 - left)
            image[top : top + height, left : left + width] = rng.choice([0.1, rng.uniform(0.15, 1.0)])
    return torch.from_numpy(images)[:, None]


def page_by_page(images: torch.Tensor, factor: float, canvas: int) -> torch.Tensor:
    """What the canvas distortions stand for: each digit scaled, drawn dark on a light page at a random
    place, and read back by preprocess.prepare, one page at a time."""
    side = round(IMAGE_SHAPE[0] * factor)
    mode = {"mode": "area"} if factor < 1 else {"mode": "bilinear", "align_corners": False}
    ink = (F.interpolate(images, size=(side, side), **mode).squeeze(1).clamp(0, 1) * 255).round().byte().numpy()
    rng = np.random.default_rng(1)
    prepared = []
    for digit in ink:
        top, left = rng.integers(0, canvas - side + 1, 2)
        page = np.zeros((canvas, canvas), np.uint8)
        page[top : top + side, left : left + side] = digit
        try:
            prepared.append(preprocess.prepare(Image.fromarray(255 - page)))
        except ImageError:  # blank
            prepared.append(np.zeros(IMAGE_SHAPE, np.float32))
    return torch.from_numpy(np.stack(prepared))[:, None]


@pytest.mark.parametrize(("name", "factor", "canvas"), [("canvas_small", 0.5, 48), ("canvas_large", 2.0, 80)])
def test_canvas_distortions_give_what_prepare_gives_page_by_page(name, factor, canvas):
    images = strokes()
    if MNIST_MIRROR:
        images = torch.cat([images, load_split(MNIST_MIRROR, train=False).images[::20]])
    expected = page_by_page(images, factor, canvas)
    got = robustness.DISTORTIONS[name](images)
    # The same pixels, or a float32 step apart where Pillow took its two passes in the other order.
    assert (got - expected).abs().max() <= 2e-7
    assert (got == expected).all((1, 2, 3)).float().mean() > 0.9
    assert expected[:2].abs().sum() == 0 and (expected.flatten(1).amax(1) == 1).float().mean() > 0.6  # mostly ink


class Always(nn.Module):
    """Answers class `c` for every image."""

    def __init__(self, c: int):
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(x),), self.c), 10).float()


def test_report_is_the_share_answered_right_on_each_distortion():
    labels = torch.tensor([3, 3, 3, 1, 1] * 20)  # 60 % threes, in every fourth image too
    test = Split(torch.rand(100, 1, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0)), labels)
    report = robustness.report(Always(3), test)
    assert list(report) == list(robustness.DISTORTIONS)
    assert set(report.values()) == {0.6}  # whatever the images became, on every fourth image
    assert set(robustness.report(Always(1), test).values()) == {0.4}


def test_the_report_is_the_same_every_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    test = Split(
        torch.rand(64, 1, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(1)),
        torch.from_numpy(np.arange(64) % 10),
    )
    assert robustness.report(model, test) == robustness.report(model, test)
