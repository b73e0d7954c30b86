"""End to end in a real browser: the MLflow UI shows the pipeline's experiment, run, params and charts.

The real `mlflow server` serves the store that the session's `dvc repro` wrote; Debian's Chromium,
driven by PyPI's playwright (no browser download), reads it the way a person would. Screenshots
go to test-artifacts/ at the repo root (gitignored).
"""

import os
import re

import pytest
import yaml
from playwright.sync_api import expect

from mnist_pipeline.tracking.env import ui_link

from support.browser import CHROMIUM, SCREENSHOTS, VIEWPORT, WAIT_MS
from support.local_servers import mlflow_server
from support.projects import EPOCHS, PER_EPOCH, project_runs, store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)"
    ),
]


@pytest.fixture(scope="module")
def mlflow_ui(project, tmp_path_factory):
    """The real `mlflow server` on the project's store, on a free loopback port; its base URL."""
    root, _ = project
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", cwd=root, log=folder / "server.log", env=env) as url:
        yield url


@pytest.fixture
def browser_context(browser):
    """A fresh profile for each test: what one test clicks (the UI saves its view) never leads another."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    # The assistant side panel opens by itself on a first visit and narrows every page.
    context.add_init_script(
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
    )
    yield context
    context.close()


@pytest.fixture
def page(browser_context, request):
    page = browser_context.new_page()
    failure = SCREENSHOTS / f"mlflow-failed-{request.node.name}.png"
    failure.unlink(missing_ok=True)
    failed = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed:  # the call failed: keep what the browser showed
        page.screenshot(path=failure, full_page=True)
    page.close()


@pytest.fixture(scope="module")
def logged(project):
    """The experiment, its runs (newest first) as the store has them, and the newest run.

    The session's project may hold more than one run when other tests ran first (a forced repro
    in test_pipeline.py adds one, with the same name), so runs are found by id, not by name alone.
    """
    root, _ = project
    experiment = store(root).get_experiment_by_name("mnist-mlp")
    runs = project_runs(root, order_by=["attributes.start_time DESC"])
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    return experiment, runs, runs[0]


def run_link(page, experiment, run):
    """The link to this run, named with its run name."""
    return page.get_by_role("link", name=run.info.run_name, exact=True).and_(
        page.locator(f'a[href$="#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"]')
    )


def test_the_direct_link_opens_a_fresh_browser_on_the_runs_and_their_charts(mlflow_ui, browser, logged):
    """The link `make ui` and the train stage print, in a browser that has never seen MLflow: no click."""
    experiment, runs, run = logged
    context = browser.new_context(viewport=VIEWPORT)  # a fresh profile: nothing in localStorage
    try:
        page = context.new_page()
        page.goto(ui_link(mlflow_ui, experiment.experiment_id))
        for each in runs:
            expect(page.get_by_text(each.info.run_name, exact=True).first).to_be_visible()
        cards = page.get_by_test_id("experiment-view-compare-runs-card")
        for name in PER_EPOCH:
            expect(cards.filter(has=page.get_by_role("heading", name=name, exact=True))).to_have_count(1)
        expect(cards.locator(".scatterlayer .js-line").first).to_have_attribute("d", re.compile(r"^M[-\d.]+,[-\d.]+L"))
    finally:
        page.screenshot(path=SCREENSHOTS / "mlflow-direct-link.png", full_page=True)  # what the browser showed
        context.close()


def test_ui_lists_the_experiment_its_run_and_params(mlflow_ui, page, logged):
    experiment, runs, run = logged
    page.goto(f"{mlflow_ui}/#/experiments")
    experiment_link = page.get_by_role("link", name="mnist-mlp", exact=True)
    expect(experiment_link).to_be_visible()

    # The UI starts in its GenAI view, where an experiment opens on a traces overview; the
    # "Model training" view opens it on its runs.
    page.get_by_role("button", name="Model training", exact=True).click()
    experiment_link.click()
    # The experiment's page: bare, or its runs tab with the view's query (the UI writes either).
    expect(page).to_have_url(re.compile(rf"#/experiments/{experiment.experiment_id}(/runs)?(\?.*)?$"))
    for each in runs:
        expect(run_link(page, experiment, each)).to_be_visible()
    expect(page.get_by_text(re.compile(rf"^{len(runs)} matching runs?$"))).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "mlflow-experiment-runs.png", full_page=True)

    run_link(page, experiment, run).click()
    expect(page).to_have_url(re.compile(rf"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}$"))
    expect(page.get_by_role("heading", name=run.info.run_name, exact=True)).to_be_visible()
    expect(page.get_by_text(run.info.run_id, exact=True)).to_be_visible()  # "About this run"
    params = run.data.params
    expect(page.get_by_text(f"Parameters ({len(params)})", exact=True)).to_be_visible()
    for name in ("train.lr", "train.batch_size", "train.epochs", "model.hidden"):
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))
        expect(row.get_by_role("cell")).to_have_text([name, params[name]])
    assert params["train.lr"] == "0.1"
    for name in PER_EPOCH:  # the metrics table shows each metric's last value
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))
        expect(row).to_be_visible()
        assert float(row.get_by_role("cell").nth(1).inner_text()) == pytest.approx(run.data.metrics[name])
    page.screenshot(path=SCREENSHOTS / "mlflow-run-overview.png", full_page=True)


def test_ui_charts_every_per_epoch_metric_against_its_step(mlflow_ui, page, logged):
    experiment, _, run = logged
    page.goto(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/model-metrics")
    expect(page.get_by_role("heading", name=run.info.run_name, exact=True)).to_be_visible()
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    expect(cards.first).to_be_visible()

    # The page draws only the charts in view (24 metrics here); its search takes a regex.
    page.get_by_placeholder("Search metric charts").fill(f"^({'|'.join(PER_EPOCH)})$")
    expect(cards).to_have_count(len(PER_EPOCH))
    for name in PER_EPOCH:
        card = cards.filter(has=page.get_by_role("heading", name=name, exact=True))
        expect(card).to_have_count(1)
        # A plotly line chart against "Step": a drawn line through one point per epoch (a second,
        # faint trace without points is the unsmoothed line behind it).
        line = card.locator(".scatterlayer .js-line").first
        expect(line).to_have_attribute("d", re.compile(r"^M[-\d.]+,[-\d.]+L"))
        expect(card.locator(".scatterlayer .point")).to_have_count(EPOCHS)
        expect(card.locator(".xtitle")).to_have_text("Step")
        expect(card).to_contain_text(run.info.run_name)
    page.screenshot(path=SCREENSHOTS / "mlflow-run-metrics.png", full_page=True)


def test_the_registered_version_shows_the_model_card(mlflow_ui, page, project, logged):
    root, _ = project
    _, _, run = logged
    (version,) = store(root).search_model_versions(f"name = 'mnist-mlp' and run_id = '{run.info.run_id}'")
    card = yaml.safe_load((root / "dvc.yaml").read_text())["artifacts"]["mnist-mlp"]["desc"]
    assert version.description == card  # the same text as dvc.yaml's, rendered as markdown below
    page.goto(f"{mlflow_ui}/#/models/mnist-mlp/versions/{version.version}")
    expect(page.get_by_role("heading", name="mnist-mlp: MLP 784-32-16-10 on mnist")).to_be_visible()
    for section in ("Data", "Params", "Per class (test set)", "Robustness (test accuracy under fixed distortions)"):
        expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="rotated 30°", exact=True)).to_be_visible()  # its tables, as tables
    expect(page.get_by_text("Hurt most by:")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "mlflow-model-card.png", full_page=True)
