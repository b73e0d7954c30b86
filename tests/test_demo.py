"""`make demo`: the drawing page, its server, and strokes drawn with the mouse in headless Chromium.

The server runs as `python -m mnist_pipeline.demo` on a free port. It serves the session's trained
model where real MNIST is available (the browser tests need one that reads digits), else random
weights for the checks of the answer's form.
"""

import contextlib
import io
import json
import math
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from mnist_pipeline.data import preprocess

from support.browser import SCREENSHOTS
from support.local_servers import stop
from support.tools import MNIST_MIRROR, REPO, clean_env, free_port

pytestmark = pytest.mark.slow
# The drawing tests need a model that reads digits: the session's, trained on real MNIST.
NEEDS_TRAINED_MODEL = pytest.mark.skipif(not MNIST_MIRROR, reason="needs MNIST_MIRROR (real MNIST files)")
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
START_S = 60


@pytest.fixture(scope="module")
def demo(request, untrained_model, tmp_path_factory) -> Iterator[str]:
    """The demo server's base URL."""
    checkpoint = request.getfixturevalue("trained_model") if MNIST_MIRROR else untrained_model
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    command = [sys.executable, "-m", "mnist_pipeline.demo", "--model", str(checkpoint), "--port", str(port)]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command,
            env=clean_env(PYTHONPATH=str(REPO / "src")),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            if server.poll() is not None:
                raise AssertionError(f"demo exited {server.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                LOOPBACK.open(url, timeout=2).close()
                break
            assert time.monotonic() < deadline, f"demo not answering after {START_S} s:\n{log.read_text()}"
            time.sleep(0.25)
        yield url
    finally:
        stop(server)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def post_drawing(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "image/png"})
    try:
        with LOOPBACK.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_page_is_self_contained(demo):
    with LOOPBACK.open(demo, timeout=10) as response:
        html = response.read().decode()
    assert "<canvas" in html
    # No script, style sheet, font or image from elsewhere: the page works offline.
    assert not re.search(r"""(src|href)\s*=|@import|url\(|https?://""", html), "refers to another resource"


def test_answers_a_drawing_with_predicts_own_preprocessing(demo):
    drawing = Image.new("RGBA", (280, 280), "white")
    ImageDraw.Draw(drawing).line([(140, 40), (140, 240)], fill="black", width=22)
    status, answer = post_drawing(demo, png(drawing))
    assert status == 200 and list(answer) == ["class", "probabilities", "pixels"]
    assert answer["class"] == int(np.argmax(answer["probabilities"])) and len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-5)
    # The pixels the model saw are exactly those predict makes of the same image.
    assert np.allclose(answer["pixels"], preprocess.from_bytes(png(drawing)), atol=1e-3)


@pytest.mark.parametrize(
    "body, message",
    [
        (png(Image.new("RGBA", (280, 280), "white")), "^blank image: no pixel differs from the background"),
        (png(Image.new("RGBA", (280, 280), "white"))[:100], r"^not a readable image \(.*truncated"),
        (b"", "^not a PNG or JPEG image$"),
    ],
    ids=["blank", "damaged", "empty"],
)
def test_blank_or_unreadable_drawing_is_a_422_with_the_reason(demo, body, message):
    status, answer = post_drawing(demo, body)
    assert status == 422 and re.search(message, answer["error"]), answer


@pytest.fixture
def page(browser, demo):  # noqa: F811 (browser: test_ui's fixture, imported)
    context = browser.new_context(viewport={"width": 760, "height": 470})
    page = context.new_page()
    page.goto(demo)
    yield page
    context.close()


def draw(page, points: list[tuple[float, float]], release: bool = True) -> None:
    """A stroke with the mouse through `points`, given in the pad's own 280x280 pixels; the
    button stays down after the last point unless `release`."""
    box = page.locator("#pad").bounding_box()
    x, y = box["x"] + 1, box["y"] + 1  # inside the 1 px border
    page.mouse.move(x + points[0][0], y + points[0][1])
    page.mouse.down()
    for px, py in points[1:]:
        page.mouse.move(x + px, y + py, steps=4)
    if release:
        page.mouse.up()


def bars(page) -> list[float]:
    return [float(t) for t in page.locator(".pct").all_inner_texts()]


@pytest.mark.browser
@pytest.mark.real_data
@NEEDS_TRAINED_MODEL
def test_a_vertical_stroke_reads_as_1(page):
    expect(page.locator("#digit")).to_have_text("?")
    draw(page, [(140, 40), (140, 110), (140, 180), (140, 240)])
    expect(page.locator("#digit")).to_have_text("1")
    assert max(bars(page)) == bars(page)[1] and sum(bars(page)) == pytest.approx(100, abs=1)
    top = page.locator(".row.top")
    expect(top).to_have_count(1)
    expect(top.locator("span").first).to_have_text("1")
    drawn = top.locator(".fill").bounding_box()["width"] / top.locator(".bar").bounding_box()["width"]
    assert drawn == pytest.approx(bars(page)[1] / 100, abs=0.01)  # the bar is as long as the probability
    page.screenshot(path=SCREENSHOTS / "demo-1.png")

    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#digit")).to_have_text("?")
    assert page.locator(".pct").all_inner_texts() == [""] * 10


@pytest.mark.browser
@pytest.mark.real_data
@NEEDS_TRAINED_MODEL
def test_an_oval_is_answered_while_it_is_drawn_and_reads_as_0(page):
    oval = [(140 + 65 * math.sin(t), 140 - 95 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 40)]
    draw(page, oval[:25], release=False)
    expect(page.locator("#digit")).to_have_text(re.compile(r"^\d$"))  # answered with the button still down
    draw(page, oval[24:])
    expect(page.locator("#digit")).to_have_text("0")
    page.screenshot(path=SCREENSHOTS / "demo-0.png")
