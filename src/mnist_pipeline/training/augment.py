"""Distortions of image batches: geometric ones as sampling grids, stroke width and noise as pixel
operations; random ones for training, fixed ones for robustness."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mnist_pipeline.config import AugmentConfig

ELASTIC_SIGMA = 4.0  # pixels: the smoothing of the displacement field, Simard et al.'s for MNIST
# A stream of its own, so switching augmentation on leaves the epochs' shuffles as they were.
SEED_OFFSET = 1_000_003


def affine_grids(
    size: tuple[int, int],
    rotation: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    shear: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampling grids (N, H, W, 2) that turn each image by `rotation` degrees (counter-clockwise as
    seen), scale its content by `scale` about the centre, shear it by `shear` degrees along x (lower
    rows to the right), then move it by `shift` (N, 2) pixels (x right, y down), for images of `size`
    (H, W). Per-image values are (N,) tensors."""
    height, width = size
    angle, skew = torch.deg2rad(rotation), torch.deg2rad(shear if shear is not None else torch.zeros_like(rotation))
    cos, sin, tan = angle.cos(), angle.sin(), skew.tan()
    # The content's transform in (x, y down) coordinates: scale * rotation * shear. With y pointing
    # down, a counter-clockwise turn as seen is [[cos, sin], [-sin, cos]].
    forward = scale[:, None, None] * torch.stack(
        [torch.stack([cos, sin + cos * tan], -1), torch.stack([-sin, cos - sin * tan], -1)], -2
    )
    # affine_grid maps each output position to where it samples the input: the inverse transform.
    inverse = torch.linalg.inv(forward)
    offset = shift * torch.tensor([2 / width, 2 / height], device=shift.device)  # pixels -> [-1, 1] units
    theta = torch.cat([inverse, -(inverse @ offset[:, :, None])], dim=2)
    # F.affine_grid(theta, align_corners=False) computes these sums as a batched product of inner size 3:
    # 7.7 ms for a batch of 256 here, a tenth of the CNN's step; as one matrix product, 0.13 ms.
    sums = theta.reshape(-1, 3) @ _pixel_centres(height, width, theta).T
    return sums.view(len(theta), 2, height, width).permute(0, 2, 3, 1)


def _pixel_centres(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(H * W, 3): each pixel's centre (x, y) in [-1, 1] units, and a 1 for the shift, as F.affine_grid places them."""
    xs = torch.linspace(-1, 1, width) * (width - 1) / width
    ys = torch.linspace(-1, 1, height) * (height - 1) / height
    grid = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width), torch.ones(height, width)], -1)
    return grid.reshape(-1, 3).to(like)


def warp(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Each image resampled along its grid (bilinear); what comes from outside the image is black."""
    return F.grid_sample(images, grids.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian over +-3 sigma."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def smooth(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of each channel, zeros beyond the border."""
    height, width = images.shape[-2:]
    # As two matrix products (columns, then rows) with banded matrices: on the CPU a tenth of the
    # time of conv2d, which handles one channel of a small image poorly.
    return _band(sigma, height, images) @ images @ _band(sigma, width, images).T


def _band(sigma: float, size: int, like: torch.Tensor) -> torch.Tensor:
    """(size, size): row i holds the Gaussian centred on pixel i, cut at the border."""
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    offsets = torch.arange(size)[None, :] - torch.arange(size)[:, None] + radius
    inside = (offsets >= 0) & (offsets < len(kernel))
    return torch.where(inside, kernel[offsets.clamp(0, len(kernel) - 1)], 0.0).to(like)


def elastic_field(noise: torch.Tensor, rms: float) -> torch.Tensor:
    """Displacements (N, H, W, 2) in grid units from white noise (N, 2, H, W): smoothed with
    ELASTIC_SIGMA, then scaled so a pixel moves `rms` pixels (root mean square) on each axis."""
    height, width = noise.shape[2:]
    # Blurring unit white noise leaves a standard deviation of the 2-D kernel's norm; divide it out.
    norm = gaussian_kernel(ELASTIC_SIGMA).square().sum()
    field = smooth(noise, ELASTIC_SIGMA) * (rms / norm)
    return field.permute(0, 2, 3, 1) * torch.tensor([2 / width, 2 / height], device=noise.device)


def thicker(images: torch.Tensor) -> torch.Tensor:
    """Strokes one pixel wider each way: grey-level dilation by a 3x3 cross, each pixel the brightest
    of itself and its four neighbours (what lies outside is black)."""
    padded = F.pad(images, (1, 1, 1, 1))
    brightest = images
    for top, left in ((0, 1), (2, 1), (1, 0), (1, 2)):
        brightest = torch.maximum(brightest, padded[..., top : top + images.shape[-2], left : left + images.shape[-1]])
    return brightest


def thinner(images: torch.Tensor) -> torch.Tensor:
    """Strokes one pixel narrower each way: erosion by the same cross, each pixel the darkest of the five."""
    return 1 - thicker(1 - images)


@dataclass(frozen=True)
class Draws:
    """A batch's random distortions, one per image: its sampling grid (N, H, W, 2), then its stroke
    change (N,): -1 thinner, 1 thicker, 0 as drawn, and the noise added to its pixels (N, 1, H, W)."""

    grids: torch.Tensor
    strokes: torch.Tensor | None = None
    noise: torch.Tensor | None = None

    def select(self, pick: Callable[[torch.Tensor], torch.Tensor]) -> "Draws":
        """These draws for some of the images (a process's share of the batch)."""
        strokes, noise = (None if t is None else pick(t) for t in (self.strokes, self.noise))
        return Draws(pick(self.grids), strokes, noise)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        images = warp(images, self.grids)
        if self.strokes is not None:
            change = self.strokes[:, None, None, None]
            images = torch.where(change > 0, thicker(images), torch.where(change < 0, thinner(images), images))
        if self.noise is not None:
            images = (images + self.noise).clamp(0, 1)
        return images


def random_draws(
    cfg: AugmentConfig, n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device
) -> Draws:
    """One random distortion for each of `n` images: each geometric strength drawn uniformly within
    +-its value; a `stroke` share of the images made thinner or thicker (half each); Gaussian noise
    whose standard deviation is drawn uniformly in [0, noise]. Drawn on the CPU, so every device
    distorts alike; what is off draws nothing, so runs without it keep their draws."""
    u = torch.rand(n, 5, generator=generator).mul_(2).sub_(1).to(device)  # uniform in [-1, 1]
    grids = affine_grids(
        size, u[:, 0] * cfg.rotation, 1 + u[:, 1] * cfg.scale, u[:, 2:4] * cfg.translate, u[:, 4] * cfg.shear
    )
    if cfg.elastic:
        noise = torch.randn(n, 2, *size, generator=generator).to(device)
        grids = grids + elastic_field(noise, cfg.elastic)
    strokes = pixels = None
    if cfg.stroke:
        share = torch.rand(n, generator=generator)
        strokes = ((share < cfg.stroke).int() * torch.where(share < cfg.stroke / 2, -1, 1)).to(device)
    if cfg.noise:
        deviation = torch.rand(n, 1, 1, 1, generator=generator) * cfg.noise
        pixels = (torch.randn(n, 1, *size, generator=generator) * deviation).to(device)
    return Draws(grids, strokes, pixels)
