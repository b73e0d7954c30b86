"""Debian's Chromium, headless, driven by PyPI's playwright with no browser download: the `browser`
fixture of the UI, demo and plots tests. Screenshots go to test-artifacts/ at the repo root (gitignored)."""

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from support.tools import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "test-artifacts"
# The UI scrolls inside its own panel, so a "full page" screenshot is only the viewport: make it
# tall enough for the whole run overview (24 metrics, 14 params).
VIEWPORT = {"width": 1440, "height": 1800}
WAIT_MS = 30_000  # first loads of the UI's bundle on 2 busy cores take seconds


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by playwright (no browser download), for the session."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)")
    expect.set_options(timeout=WAIT_MS)
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
