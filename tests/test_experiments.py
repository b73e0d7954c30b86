"""DVC experiments against one MLflow store: exp run (plain, --queue, --temp, back to a cached run),
diffs, bad -S values. Every execution leaves one complete run."""

import json
import shlex

import pytest

from mnist_pipeline.evaluation.robustness import DISTORTIONS

from support.projects import EPOCHS, assert_complete_run, committed_run, exp_params, exp_values, project_runs, store
from support.tools import REPO, clean_env, run_queue, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A project whose default run (lr 0.1, batch 32) is committed, as this repo's is."""
    return committed_run(tmp_path_factory.mktemp("experiments"))


@pytest.fixture(scope="module")
def experiments(baseline):
    """Each way of running an experiment, once: --temp, two --queue'd at once, in the workspace, and
    back to the baseline's params (its plot stage then comes from DVC's run-cache).
    Returns {name: (lr, batch size, epochs)} and the last run's output."""
    sh(
        "dvc",
        "exp",
        "run",
        "--temp",
        "-n",
        "temp-bs64",
        "-S",
        "train.batch_size=64",
        "-S",
        "train.augment.rotation=15",
        cwd=baseline,
    )
    sh("dvc", "exp", "run", "--queue", "-n", "queued-a", "-S", "train.lr=0.05", cwd=baseline)
    sh("dvc", "exp", "run", "--queue", "-n", "queued-b", "-S", "train.lr=0.2", cwd=baseline)
    # Two at once, writing to the same SQLite store: no run and no metric point may be lost.
    run_queue(baseline, 2)
    sh("dvc", "exp", "run", "-n", "lr-001", "-S", "train.lr=0.01", "-S", "train.epochs=3", cwd=baseline)
    back = sh("dvc", "exp", "run", "-n", "back", "-S", "train.lr=0.1", "-S", f"train.epochs={EPOCHS}", cwd=baseline)
    ran = {
        "temp-bs64": (0.1, 64, EPOCHS),
        "queued-a": (0.05, 32, EPOCHS),
        "queued-b": (0.2, 32, EPOCHS),
        "lr-001": (0.01, 32, 3),
        "back": (0.1, 32, EPOCHS),
    }
    return ran, back


def test_readme_compares_experiments_headline_first_in_120_columns(baseline, experiments):
    ran, _ = experiments
    (line,) = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("dvc exp show")]
    shown = sh(*shlex.split(line, comments=True), cwd=baseline, env=clean_env(COLUMNS="120")).stdout.splitlines()
    header = next(line for line in shown if "Experiment" in line)
    start = header.index("test_accuracy")
    end = start + len("test_accuracy")
    assert end <= 120, header  # in sight in a 120-column terminal, before any param
    metrics = exp_values(baseline, "metrics", "metrics/eval.json")
    for name in ran:
        (row,) = [row for row in shown if f"[{name}]" in row]
        assert float(row[start:end]) == round(metrics[name]["test_accuracy"], 5), row


def test_dvc_lists_every_experiment_with_its_params(baseline, experiments):
    ran, _ = experiments
    rows = exp_params(baseline)
    for name, (lr, batch_size, epochs) in ran.items():
        assert (rows[name]["train"]["lr"], rows[name]["train"]["batch_size"], rows[name]["train"]["epochs"]) == (
            lr,
            batch_size,
            epochs,
        ), name
    # A key of a group within a group, set with -S by its dotted name.
    assert (
        rows["temp-bs64"]["train"]["augment"]["rotation"] == 15 and rows["lr-001"]["train"]["augment"]["rotation"] == 0
    )


def test_every_experiment_is_one_complete_run_in_the_one_store(baseline, experiments):
    ran, _ = experiments
    head = sh("git", "rev-parse", "HEAD", cwd=baseline).stdout.strip()
    client = store(baseline)
    for name, (lr, batch_size, epochs) in ran.items():
        (run,) = project_runs(baseline, filter_string=f"tags.dvc_experiment = '{name}'")
        assert_complete_run(client, run.info.run_id, epochs)
        assert run.data.tags["git_commit"] == head
        assert run.info.run_name == f"{name} lr={lr:g} bs={batch_size} ep={epochs} sgd"
        # Runs made in DVC's temporary copies keep their artifacts at the real root, not in a deleted copy.
        assert run.info.artifact_uri.startswith((baseline / "mlruns").as_uri())
        assert run.data.params["train.augment.rotation"] == ("15.0" if name == "temp-bs64" else "0.0")


def test_a_run_cache_restore_leaves_the_record_whole(baseline, experiments):
    _, back = experiments
    # Back at the baseline's params: DVC restores plot from its run-cache, while train (whose
    # history.json is cache: false) always trains, and records everything itself.
    assert "Running stage 'train'" in back.stdout
    assert "Stage 'plot' is cached - skipping run, checking out outputs" in back.stdout
    (run,) = project_runs(baseline, filter_string="tags.dvc_experiment = 'back'")
    assert_complete_run(store(baseline), run.info.run_id, EPOCHS)


def test_bad_set_param_gives_the_params_error(baseline):
    done = sh("dvc", "exp", "run", "--temp", "-S", "train.lr=abc", cwd=baseline, check=False)
    assert done.returncode != 0
    assert "error: params.yaml: train.lr = 'abc': expected a number" in done.stdout + done.stderr


def test_params_metrics_and_plots_diff_against_the_committed_run(baseline, experiments):
    sh("dvc", "exp", "apply", "lr-001", cwd=baseline)
    try:
        params = json.loads(sh("dvc", "params", "diff", "--json", cwd=baseline).stdout)["params.yaml"]
        assert (params["train.lr"]["old"], params["train.lr"]["new"]) == (0.1, 0.01)
        assert (params["train.epochs"]["old"], params["train.epochs"]["new"]) == (EPOCHS, 3)
        assert "train.batch_size" not in params  # unchanged keys are not listed

        diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=baseline).stdout)
        metrics = diff["metrics/eval.json"]
        for key in ("test_accuracy", "test_loss"):
            assert set(metrics[key]) == {"old", "new", "diff"} and metrics[key]["old"] != metrics[key]["new"]
        assert list(diff) == ["metrics/eval.json"]  # the per-distortion figures are a plot

        plots = json.loads(sh("dvc", "plots", "diff", "--json", "HEAD", cwd=baseline).stdout)["data"]
        for name, y_label in (("Loss", "cross-entropy loss"), ("Accuracy", "accuracy (fraction)")):
            (plot,) = plots[name]
            assert sorted(plot["revisions"]) == ["HEAD", "workspace"]  # both revisions, overlaid
            spec = json.dumps(plot["content"])
            assert f"{name} per epoch" in spec and y_label in spec and '"epoch"' in spec
            revs = {row["rev"] for row in plot["content"]["data"]["values"]}
            assert revs == {"HEAD", "workspace"}
        (robust,) = plots["Robustness"]  # a bar per distortion and revision
        rows = robust["content"]["data"]["values"]
        assert sorted((r["distortion"], r["rev"]) for r in rows) == sorted(
            (name, rev) for name in DISTORTIONS for rev in ("HEAD", "workspace")
        )

        html = sh("dvc", "plots", "diff", "HEAD", "-o", str(baseline / "diff-html"), cwd=baseline)
        assert (baseline / "diff-html" / "index.html").exists(), html.stdout
    finally:
        sh("git", "checkout", "--", "params.yaml", "dvc.lock", "metrics", cwd=baseline)
        sh("dvc", "checkout", cwd=baseline)
