"""Test accuracy under fixed, seeded distortions of the test set: metrics/robustness.json's figures."""

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mnist_pipeline.data import preprocess
from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.data.splits import Split
from mnist_pipeline.files import rounded
from mnist_pipeline.training import augment, scoring

SEED = 0  # the noise: the same for every model, so their figures compare
NOISE = 0.3  # standard deviation of the added Gaussian noise, pixels being in [0, 1]
BLUR = 1.0  # sigma of the Gaussian blur, in pixels
# Scored on every fourth test image (2,500, the same for every distortion and model): on one thread
# the 13 passes through the model take about 1 s each for 10,000 images through README's CNN.
EVERY = 4

Distortion = Callable[[torch.Tensor], torch.Tensor]


def _alternating(n: int, value: float, device: torch.device) -> torch.Tensor:
    """+value, -value, +value, ...: both directions, half the images each."""
    return value * (1 - 2 * (torch.arange(n, device=device) % 2)).float()


def rotate(degrees: float) -> Distortion:
    def distort(images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        turn = _alternating(n, degrees, images.device)
        grids = augment.affine_grids(IMAGE_SHAPE, turn, torch.ones_like(turn), turn.new_zeros(n, 2))
        return augment.warp(images, grids)

    return distort


def scale(factor: float) -> Distortion:
    """The digit `factor` times its size, about the image centre."""

    def distort(images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        zeros = images.new_zeros(n)
        return augment.warp(images, augment.affine_grids(IMAGE_SHAPE, zeros, zeros + factor, images.new_zeros(n, 2)))

    return distort


def shift(pixels: float) -> Distortion:
    """Moved `pixels` right, down, left or up, in turn."""

    def distort(images: torch.Tensor) -> torch.Tensor:
        n = len(images)
        directions = images.new_tensor([[1, 0], [0, 1], [-1, 0], [0, -1]]) * pixels
        zeros = images.new_zeros(n)
        moves = directions[torch.arange(n, device=images.device) % 4]
        return augment.warp(images, augment.affine_grids(IMAGE_SHAPE, zeros, zeros + 1, moves))

    return distort


def blur(images: torch.Tensor) -> torch.Tensor:
    return augment.smooth(images, BLUR)


def low_resolution(side: int) -> Distortion:
    """Averaged down to side x side pixels, then scaled back up (bilinear), as a coarse scan."""

    def distort(images: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(images, size=(side, side), mode="area")
        return F.interpolate(small, size=IMAGE_SHAPE, mode="bilinear", align_corners=False)

    return distort


def noise(images: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    grain = torch.randn(images.shape, generator=generator).to(images.device)
    return (images + NOISE * grain).clamp(0, 1)


def on_canvas(factor: float) -> Distortion:
    """Each digit scaled by `factor`, drawn on a page, and brought back to 28x28 by predict's own
    preprocessing (preprocess.prepare): the ink cut out of the page, scaled to 20 px and centred by mass.

    prepare's steps run here on the whole batch at once, as tensors: its threshold and stretch in
    float32, Pillow's bilinear filter with its weights and its order of sums (bit for bit where Pillow
    resizes across first, as it does for most digits; a float32 step apart where it goes down first);
    then each digit is centred by preprocess.centre itself. Page by page through prepare, the two
    canvases took 1.9 s of the report. Where a digit lies on its page makes no difference: prepare cuts
    it out (tests/test_robustness.py checks both against prepare).
    """

    def distort(images: torch.Tensor) -> torch.Tensor:
        side = round(IMAGE_SHAPE[0] * factor)
        digits = F.interpolate(
            images.cpu(),
            size=(side, side),
            mode="area" if factor < 1 else "bilinear",
            align_corners=None if factor < 1 else False,
        )
        grey = (digits.squeeze(1).clamp(0, 1) * 255).round()  # the page's 8-bit grey levels, ink light
        strongest = grey.amax((1, 2), keepdim=True)
        ink = torch.where(grey > preprocess.INK_LEVEL, grey / strongest, 0.0)
        (top, bottom), (left, right) = _extent(ink.any(2)), _extent(ink.any(1))
        height, width = bottom - top + 1, right - left + 1
        # preprocess.scale: the longer side to DIGIT_BOX pixels, Pillow's rounding of the other.
        ratio = preprocess.DIGIT_BOX / torch.maximum(height, width).double()
        out_h, out_w = (torch.round(n * ratio).clamp(min=1).long() for n in (height, width))
        across = _resampled(ink.transpose(1, 2), left, width, out_w).transpose(1, 2)  # Pillow: across first
        small = _resampled(across, top, height, out_h)
        scaled = (small / small.amax((1, 2), keepdim=True)).clamp(0, 1).numpy()
        prepared = np.zeros((len(ink), *IMAGE_SHAPE), np.float32)  # a blank page stays black
        for n in (strongest.flatten() > preprocess.INK_LEVEL).nonzero().flatten().tolist():
            prepared[n] = preprocess.centre(np.ascontiguousarray(scaled[n, : out_h[n], : out_w[n]]))
        return torch.from_numpy(prepared)[:, None].to(images.device)

    return distort


def _extent(any_ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first and last index where each row of (N, S) is true (0 and 0 where none is)."""
    first = any_ink.int().argmax(1)
    return first, torch.maximum(any_ink.shape[1] - 1 - any_ink.flip(1).int().argmax(1), first)


def _resampled(images: torch.Tensor, start: torch.Tensor, length: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(N, S, S') -> (N, DIGIT_BOX, S'): along dim 1, rows [start, start + length) of each image resized
    to `out` rows (the rest zero) as Pillow's bilinear filter does it for float images (precompute_coeffs,
    ResampleVertical_32bpc): a triangle widened by the reduction, its weights summed in order and
    normalised, each output a sum in double taken in order, stored as float32."""
    box = preprocess.DIGIT_BOX
    scale = (length.double() / out)[:, None]  # (N, 1)
    spread = scale.clamp(min=1)
    centre = (torch.arange(box, dtype=torch.float64)[None, :] + 0.5) * scale  # (N, box)
    first = (centre - spread + 0.5).long().clamp(min=0)  # C's (int): truncation
    count = torch.minimum((centre + spread + 0.5).long(), length[:, None]) - first
    count = torch.where(torch.arange(box)[None, :] < out[:, None], count, 0)
    weights = []
    for j in range(int(count.max())):
        t = ((first + j - centre + 0.5) * (1 / spread)).abs()
        weights.append(torch.where((j < count) & (t < 1), 1 - t, 0.0))
    total = torch.zeros_like(centre)
    for w in weights:
        total = total + w
    total = torch.where(total != 0, total, 1.0)
    n = torch.arange(len(images))[:, None]
    sums = images.new_zeros(len(images), box, images.shape[2], dtype=torch.float64)
    for j, w in enumerate(weights):
        row = (start[:, None] + first + j).clamp(max=images.shape[1] - 1)
        sums = sums + images[n, row].double() * (w / total)[:, :, None]
    return sums.float()


DISTORTIONS: dict[str, Distortion] = {
    "rotate_15": rotate(15),
    "rotate_30": rotate(30),
    "scale_70": scale(0.7),
    "scale_130": scale(1.3),
    "shift_4": shift(4),
    "thinner": augment.thinner,
    "thicker": augment.thicker,
    "blur": blur,
    "low_res_14": low_resolution(14),
    "low_res_10": low_resolution(10),
    "noise": noise,
    "canvas_small": on_canvas(0.5),
    "canvas_large": on_canvas(2.0),
}


def report(model: nn.Module, test: Split) -> dict[str, float]:
    """metrics/robustness.json's content: distortion name -> accuracy on the distorted test images
    0, EVERY, 2 * EVERY, ..."""
    images, labels = test.images[::EVERY], test.labels[::EVERY]
    accuracy = {}
    for name, distort in DISTORTIONS.items():
        predicted = scoring.predict(model, distort(images)).argmax(1)
        accuracy[name] = (predicted == labels).float().mean().item()
    return rounded(accuracy)
