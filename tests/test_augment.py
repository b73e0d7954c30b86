"""train.augment: seeded random distortions of the training batches; off, the run is the article's, bit for bit."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mnist_pipeline.config import load_params
from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.training import augment, engine

from support.synthetic import known_image
from support.tiny import augmented, train_in_process
from support.tools import MNIST_MIRROR, REPO

CPU = torch.device("cpu")


def affine(image: torch.Tensor, rotation=0.0, scale=1.0, shift=(0.0, 0.0), shear=0.0) -> torch.Tensor:
    one = torch.ones(len(image))
    grids = augment.affine_grids(IMAGE_SHAPE, one * rotation, one * scale, torch.tensor([shift]), one * shear)
    return augment.warp(image, grids)


@pytest.mark.parametrize(("degrees", "quarter_turns"), [(90, 1), (-90, -1), (180, 2), (0, 0)])
def test_rotation_turns_counter_clockwise_as_seen(degrees, quarter_turns):
    image = known_image()
    assert torch.allclose(affine(image, rotation=degrees), torch.rot90(image, quarter_turns, (2, 3)), atol=1e-5)


def test_shift_moves_right_and_down_in_pixels():
    image = known_image()
    assert torch.allclose(affine(image, shift=(3, -2)), torch.roll(image, (-2, 3), (2, 3)), atol=1e-5)


def test_scale_grows_about_the_centre_and_shear_slants_along_x():
    dot = torch.zeros(1, 1, *IMAGE_SHAPE)
    dot[0, 0, 13:15, 19:21] = 1.0  # a 2x2 dot centred 6 px right of the image centre (13.5, 13.5)
    grown = affine(dot, scale=2.0)
    rows, cols = torch.nonzero(grown[0, 0] > 0.5, as_tuple=True)
    assert (rows.float().mean().item(), cols.float().mean().item()) == pytest.approx((13.5, 25.5), abs=0.01)
    assert len(rows) == 16  # twice the size each way
    bar = torch.zeros(1, 1, *IMAGE_SHAPE)
    bar[0, 0, 4:24, 13:15] = 1.0  # vertical
    slanted = affine(bar, shear=45)[0, 0] > 0.5
    top, bottom = (torch.nonzero(slanted[r]).float().mean().item() for r in (6, 21))
    assert bottom - top == pytest.approx(15, abs=1)  # along x, one pixel per row: lower rows move right


def test_elastic_field_moves_pixels_by_its_strength():
    noise = torch.randn(64, 2, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    field = augment.elastic_field(noise, rms=2.0) * (IMAGE_SHAPE[0] / 2)  # grid units -> pixels
    centre = field[:, 8:20, 8:20]  # away from the border, where the zeros outside weaken it
    assert centre.square().mean().sqrt().item() == pytest.approx(2.0, rel=0.15)
    assert (field[:, 1:] - field[:, :-1]).abs().mean() < 0.3 * field.abs().mean()  # smooth: neighbours move alike


def draws(seed: int, **strengths) -> augment.Draws:
    cfg = dataclasses.replace(load_params(REPO / "params.yaml").train.augment, **strengths)
    return augment.random_draws(cfg, 256, IMAGE_SHAPE, torch.Generator().manual_seed(seed), CPU)


def test_random_grids_are_seeded_and_stay_within_their_strengths():
    draw = lambda seed: draws(seed, rotation=30).grids  # noqa: E731
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    # Rotation alone: each grid is a turn about the centre; its angle from the corner's direction.
    corner = draw(0)[:, 0, 0]  # where the top-left output pixel samples, (x, y) in [-1, 1]
    turn = torch.rad2deg(torch.atan2(corner[:, 1], corner[:, 0]) - torch.atan2(torch.tensor(-1.0), torch.tensor(-1.0)))
    turn = (turn + 180) % 360 - 180
    assert turn.abs().max() <= 30.01 and turn.abs().max() > 25 and turn.min() < -25  # both ways, up to 30


def test_stroke_and_noise_are_seeded_drawn_within_their_strengths_and_off_draw_nothing():
    drawn = draws(0, stroke=0.5, noise=0.3)
    again = draws(0, stroke=0.5, noise=0.3)
    assert drawn.strokes is not None and drawn.noise is not None and again.noise is not None
    assert torch.equal(drawn.noise, again.noise) and not torch.equal(drawn.noise, draws(1, noise=0.3).noise)
    changed = drawn.strokes != 0
    assert 0.4 < changed.float().mean() < 0.6  # half of the images, thinner or thicker
    assert 0.3 < (drawn.strokes[changed] > 0).float().mean() < 0.7
    deviations = drawn.noise.flatten(1).std(1)
    assert deviations.max() < 0.32 and deviations.min() < 0.05 and deviations.max() > 0.25  # uniform in [0, 0.3]
    # Off, they draw nothing: the geometric draws of a run without them stay as they were.
    plain = draws(0, rotation=10)
    assert plain.strokes is None and plain.noise is None
    assert torch.equal(plain.grids, draws(0, rotation=10, stroke=0.5, noise=0.3).grids)


def test_draws_apply_strokes_and_noise_after_the_warp():
    image = known_image().repeat(3, 1, 1, 1)
    still = augment.affine_grids(IMAGE_SHAPE, torch.zeros(3), torch.ones(3), torch.zeros(3, 2))
    out = augment.Draws(still, strokes=torch.tensor([-1, 0, 1])).apply(image)
    assert torch.allclose(out[0], augment.thinner(image[:1])[0], atol=1e-5)
    assert torch.allclose(out[1], image[1], atol=1e-5)
    assert torch.allclose(out[2], augment.thicker(image[:1])[0], atol=1e-5)
    noisy = augment.Draws(still, noise=torch.full((3, 1, *IMAGE_SHAPE), 0.7)).apply(image)
    assert noisy.min() == pytest.approx(0.7) and noisy.max() == 1.0  # added, then clipped to [0, 1]


def steps_seen(params, data_dir) -> list[torch.Tensor]:
    """The images each training step got, over one epoch."""
    train = load_split(data_dir, train=True)
    training = engine.Training.create(params, len(train), CPU)
    seen = []

    def step(images, labels, share=1.0):
        seen.append(images.clone())
        return torch.zeros(()), torch.zeros(len(labels), 10)

    engine.train_one_epoch(
        step,
        train,
        engine.shuffled_batches(len(train), 32, training.generator, CPU),
        None,
        engine.distortions(params.train.augment, training.augment_generator),
    )
    return seen


def test_on_the_steps_get_distorted_images_and_off_the_originals(params, tiny_mnist):
    train = load_split(tiny_mnist, train=True)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(params.seed))
    originals = train.images[order].split(32)
    plain = steps_seen(params, tiny_mnist)
    assert all(torch.equal(a, b) for a, b in zip(plain, originals, strict=True))
    warped = steps_seen(augmented(params), tiny_mnist)
    assert all(not torch.equal(a, b) and a.shape == b.shape for a, b in zip(warped, originals, strict=True))
    assert torch.equal(torch.cat(warped), torch.cat(steps_seen(augmented(params), tiny_mnist)))  # seeded


def test_on_same_params_same_model_and_the_shuffles_unchanged(params, tiny_mnist):
    first, first_training = train_in_process(augmented(params), tiny_mnist)
    again, again_training = train_in_process(augmented(params), tiny_mnist)
    plain, _ = train_in_process(params, tiny_mnist)
    assert first == again and first != plain
    for name, tensor in first_training.model.state_dict().items():
        assert torch.equal(tensor, again_training.model.state_dict()[name])


def test_off_draws_nothing(params, tiny_mnist):
    _, training = train_in_process(params, tiny_mnist)
    untouched = torch.Generator().manual_seed(params.seed + augment.SEED_OFFSET).get_state()
    assert torch.equal(training.augment_generator.get_state(), untouched)


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_MIRROR, reason="needs MNIST_MIRROR (real MNIST files)")
def test_off_the_articles_run_is_the_committed_one_bit_for_bit():
    # The committed metrics/history.json is the 50-epoch default run; its constant learning rate makes
    # its first epochs those of a 2-epoch run with the same params, to the last rounded digit.
    params = load_params(REPO / "params.yaml")
    assert not params.train.augment.active
    records, _ = train_in_process(
        dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=2)), Path(MNIST_MIRROR)
    )
    committed = json.loads((REPO / "metrics/history.json").read_text())[:2]
    assert [{k: round(v, 6) for k, v in r.items()} for r in records] == committed
