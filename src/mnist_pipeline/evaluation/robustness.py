"""Test accuracy under fixed, seeded distortions of the test set: metrics/robustness.json's figures."""

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from mnist_pipeline.data import preprocess
from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.data.splits import Split
from mnist_pipeline.errors import ImageError
from mnist_pipeline.files import rounded
from mnist_pipeline.training import augment, scoring

SEED = 0  # the noise and the canvas positions: the same for every model, so their figures compare
NOISE = 0.3  # standard deviation of the added Gaussian noise, pixels being in [0, 1]
BLUR = 1.0  # sigma of the Gaussian blur, in pixels
# Scored on every fourth test image (2,500, the same for every distortion and model): on one thread
# the 13 passes through the model (about 1 s each for 10,000 images through README's CNN) and the
# canvases through predict's preprocessing (PIL, one image at a time, about 200 us each) would add
# 15 s and more to evaluate; on a quarter they add 1.5 s for the MLP, 4 s for that CNN.
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


def on_canvas(factor: float, canvas: int) -> Distortion:
    """Each digit scaled by `factor`, drawn dark on a light `canvas` x `canvas` page at a seeded
    place, and brought back to 28x28 by predict's own preprocessing (preprocess.prepare)."""

    def distort(images: torch.Tensor) -> torch.Tensor:
        side = round(IMAGE_SHAPE[0] * factor)
        digits = F.interpolate(
            images.cpu(),
            size=(side, side),
            mode="area" if factor < 1 else "bilinear",
            align_corners=None if factor < 1 else False,
        )
        ink = (digits.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        corners = torch.randint(0, canvas - side + 1, (len(images), 2), generator=torch.Generator().manual_seed(SEED))
        prepared = np.stack(
            [
                _through_preprocess(digit, canvas, top, left)
                for digit, (top, left) in zip(ink, corners.tolist(), strict=True)
            ]
        )
        return torch.from_numpy(prepared)[:, None].to(images.device)

    return distort


def _through_preprocess(digit: np.ndarray, canvas: int, top: int, left: int) -> np.ndarray:
    page = np.zeros((canvas, canvas), np.uint8)
    page[top : top + len(digit), left : left + len(digit)] = digit
    try:
        return preprocess.prepare(Image.fromarray(255 - page))
    except ImageError:  # scaled down to nothing visible: a blank input, which the model answers anyway
        return np.zeros(IMAGE_SHAPE, np.float32)


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
    "canvas_small": on_canvas(0.5, 48),
    "canvas_large": on_canvas(2.0, 80),
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
