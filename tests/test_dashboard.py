"""make dashboard: optuna-dashboard on a real tiny study's journal, read in Chromium; Ctrl-C stops it."""

import signal
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from support.browser import SCREENSHOTS, VIEWPORT
from support.studies import sweep_folder
from support.tools import REPO, clean_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ENV = clean_env(PYTHONPATH=str(REPO / "src"))
TRIALS = 3


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    """A project folder whose journal holds the study `tiny` with TRIALS finished trials."""
    root = sweep_folder(tmp_path_factory.mktemp("dashboard"))
    run = [sys.executable, "-m", "mnist_pipeline.sweep", "run", "tiny", "--trials", str(TRIALS), "--epochs", "1"]
    done = subprocess.run(run, cwd=root, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_the_dashboard_lists_the_study_and_its_trials_then_stops_on_ctrl_c(study_root, browser):
    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "mnist_pipeline.sweep.dashboard", "--port", str(port)],
        cwd=study_root,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        link = f"http://127.0.0.1:{port}/dashboard/"
        assert dashboard.stdout is not None
        assert dashboard.stdout.readline() == (
            f"dashboard: {link} (studies from {study_root / 'sweeps.journal'}); Ctrl-C stops it\n"
        )
        page = browser.new_page(viewport=VIEWPORT)
        try:
            page.goto(link)
            expect(page.get_by_text("tiny").first).to_be_visible()  # the study's card in the list
            page.goto(f"{link}studies/0/trials")
            expect(page.get_by_text(f"{TRIALS} Trials")).to_be_visible()
            for number in range(TRIALS):
                expect(page.get_by_text(f"Trial {number}", exact=True).first).to_be_visible()
            page.screenshot(path=SCREENSHOTS / "optuna-dashboard.png")
        finally:
            page.close()
    finally:
        dashboard.send_signal(signal.SIGINT)
        out, err = dashboard.communicate(timeout=30)
    assert dashboard.returncode == 130 and err == "interrupted (KeyboardInterrupt); dashboard stopped\n", err
