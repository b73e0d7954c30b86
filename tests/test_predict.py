"""`python -m mnist_pipeline.predict`: one line per image, one error line per bad file, and real accuracy."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_pipeline.serving import inference, predict

from support.digits import as_scanned
from support.tools import REPO, clean_env

ANSWER = r"(\d) \((0\.\d\d|1\.00)\)"


def drawn(path: Path) -> Path:
    """A dark stroke on white paper, saved in the format its suffix names."""
    image = Image.new("RGB", (120, 160), "white")
    ImageDraw.Draw(image).line([(60, 20), (60, 140)], fill="black", width=12)
    image.save(path)
    return path


@pytest.mark.slow
def test_each_bad_image_gets_one_error_line_and_the_others_are_still_predicted(untrained_model, tmp_path):
    good_png = drawn(tmp_path / "one.png")
    drawn(tmp_path / "one.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good_png.read_bytes()[:200])
    Image.new("L", (40, 40), 255).save(tmp_path / "white.png")
    images = ["one.png", "missing.jpg", "notes.png", "cut.png", "white.png", "one.jpg"]

    # As a user runs it: a fresh process, paths as typed, relative to the current folder.
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", "--model", str(untrained_model), *images],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=str(REPO / "src")),
    )
    assert done.returncode == 1
    assert [re.fullmatch(rf"(\S+): {ANSWER}", line)[1] for line in done.stdout.splitlines()] == ["one.png", "one.jpg"]
    assert done.stderr.splitlines() == [
        f"predict: model {untrained_model} (mlp, test accuracy not known)",  # says which model answers
        "error: missing.jpg: file not found",
        "error: notes.png: not a PNG or JPEG image",
        "error: cut.png: not a readable image (image file is truncated)",
        "error: white.png: blank image: no pixel differs from the background by more than 32 of 255 grey levels",
    ]


def test_all_good_exits_0_and_top_k_lists_the_next_guesses(untrained_model, tmp_path, capsys):
    image = drawn(tmp_path / "one.png")
    assert predict.main(["--model", str(untrained_model), str(image)]) == 0
    assert re.fullmatch(rf"{re.escape(str(image))}: {ANSWER}\n", capsys.readouterr().out)

    assert predict.main(["--model", str(untrained_model), "--top", "3", str(image)]) == 0
    line = capsys.readouterr().out
    guesses = re.fullmatch(rf"{re.escape(str(image))}: {ANSWER}, {ANSWER}, {ANSWER}\n", line)
    assert guesses, line
    digits, probabilities = guesses.groups()[::2], [float(p) for p in guesses.groups()[1::2]]
    assert len(set(digits)) == 3 and probabilities == sorted(probabilities, reverse=True)


def test_missing_model_is_one_error_line(tmp_path, capsys):
    image = drawn(tmp_path / "one.png")
    assert predict.main(["--model", str(tmp_path / "none.pt"), str(image)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {tmp_path / 'none.pt'}: file not found; run `dvc repro train` first\n"


@pytest.mark.real_data
def test_accuracy_on_real_test_digits_as_scanned(trained_model, real_digits, tmp_path, capsys):
    """100 real test digits (10 per class), each enlarged 2-10x and moved off-centre on a larger
    page; half dark on light, a third in colour, half saved as JPEG."""
    images, labels = real_digits
    paths = []
    for i, digit in enumerate(images):
        path = tmp_path / f"{i:02d}.{'jpg' if i % 2 else 'png'}"
        as_scanned(digit, seed=i, dark_ink=i % 4 < 2, colour=i % 3 == 0).save(path, quality=80)
        paths.append(str(path))
    assert predict.main(["--model", str(trained_model), *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == paths
    predicted = np.array([int(re.fullmatch(rf"\S+: {ANSWER}", line)[1]) for line in lines])

    # The same model on the same digits as MNIST has them, without the round trip through files.
    as_in_mnist = inference.from_checkpoint(trained_model).predict(images[:, None].astype(np.float32) / 255).argmax(1)
    accuracy, baseline = (predicted == labels).mean(), (as_in_mnist == labels).mean()
    print(
        f"predict: {accuracy:.1%} right on {len(labels)} real test digits as scanned; "
        f"{baseline:.1%} on the same digits as MNIST has them"
    )
    assert accuracy >= 0.9 and accuracy >= baseline - 0.05
