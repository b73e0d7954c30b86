"""DVC's plots pages draw offline: `dvc plots show` and `dvc plots diff` fill the page .dvc/config names,
Vega inlined from the pinned vl-convert, and a browser that may fetch nothing but files draws every plot."""

import configparser
import contextlib
import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from support.browser import SCREENSHOTS, WAIT_MS
from support.tools import REPO, sh

# What each plot drew: in Vega's SVG, the shapes of its data marks (lines, bars, cells; not the axes or
# legends), or on a canvas, its painted pixels; each image: its width.
DRAWN = """() => ({
    vega: [...document.querySelectorAll('.vega-embed')].map(embed => {
        const canvas = embed.querySelector('canvas');
        if (canvas) {
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            return pixels.filter((value, i) => i % 4 === 3 && value > 0).length;
        }
        return embed.querySelectorAll('svg g.role-mark path').length;
    }),
    images: [...document.querySelectorAll('img')].map(image => image.naturalWidth),
})"""


def test_make_writes_the_page_where_dvc_config_looks_for_it():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    template = (REPO / ".dvc" / config["plots"]["html_template"]).resolve()
    assert template == (REPO / ".venv" / "dvc-plots.html").resolve()
    # The venv's recipe writes it, so a fresh clone's `make` gets it with no step of its own.
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*?\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)
    assert recipe, "no recipe for $(VENV)/.installed"
    commands = [line.strip() for line in recipe.group(1).splitlines()]
    assert any(
        c.startswith("$(BIN)/python -m mnist_pipeline.evaluation.vega_page $(VENV)/dvc-plots.html") for c in commands
    )


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("command", [["show"], ["diff", "HEAD~1"]], ids=["show", "diff"])
def test_dvc_plots_pages_draw_every_plot_with_no_network(two_commits, browser, command):
    out = two_commits / f"plots-{command[0]}"
    sh("dvc", "plots", *command, "-o", str(out), cwd=two_commits)
    renders = [
        r
        for plots in json.loads(sh("dvc", "plots", *command, "--json", cwd=two_commits).stdout)["data"].values()
        for r in plots
    ]
    expected = {kind: sum(r["type"] == kind for r in renders) for kind in ("vega", "image")}
    assert expected["vega"] >= 6 and expected["image"] >= 1, expected

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    refused: list[str] = []
    errors: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(Path(out / "index.html").as_uri())
        with contextlib.suppress(PlaywrightTimeout):  # a blank page: the assertions below say what it lacked
            page.wait_for_function(
                f"() => document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= {expected['vega']}",
                timeout=WAIT_MS,
            )
        drawn = page.evaluate(DRAWN)
        page.screenshot(path=SCREENSHOTS / f"dvc-plots-{command[0]}-offline.png", full_page=True)
    finally:
        page.close()
    assert not refused and not errors, (refused, errors)
    assert len(drawn["vega"]) == expected["vega"] and all(drawn["vega"]), drawn
    assert len(drawn["images"]) == expected["image"] and all(drawn["images"]), drawn
