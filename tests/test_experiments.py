"""DVC experiments against one MLflow store: exp run (plain, --queue, --temp), diffs, bad -S values."""

import json
import time

import pytest
import yaml

from conftest import EPOCHS, make_project, project_runs, sh, store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A project whose default run is committed, as this repo's is: the base every diff compares to."""
    root = make_project(tmp_path_factory.mktemp("experiments"))
    sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "baseline run", cwd=root)
    return root


def runs_by_experiment(root):
    return store(root), {r.data.tags.get("dvc_experiment"): r for r in project_runs(root)}


def exp_rows(root) -> dict:
    """dvc exp show --json, as {experiment name: {param: value}}."""
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=root).stdout)
    rows = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for revision in exp["revs"]:
                params = revision["data"]["params"]["params.yaml"]["data"]
                rows[revision["name"]] = params
    return rows


def test_exp_run_queue_and_temp_all_land_in_one_store(baseline):
    head = sh("git", "rev-parse", "HEAD", cwd=baseline).stdout.strip()
    sh("dvc", "exp", "run", "--temp", "-n", "temp-bs64", "-S", "train.batch_size=64", cwd=baseline)
    sh("dvc", "exp", "run", "--queue", "-n", "queued-a", "-S", "train.lr=0.05", cwd=baseline)
    sh("dvc", "exp", "run", "--queue", "-n", "queued-b", "-S", "train.lr=0.2", cwd=baseline)
    # Two at once, writing to the same SQLite store: no run and no metric point may be lost.
    sh("dvc", "queue", "start", "-j", "2", cwd=baseline)
    deadline = time.monotonic() + 600
    while "Queued" in (status := sh("dvc", "queue", "status", cwd=baseline).stdout) or "Running" in status:
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status
    # Last, as it leaves its params in the workspace and later experiments would start from them.
    sh("dvc", "exp", "run", "-n", "lr-001", "-S", "train.lr=0.01", "-S", "train.epochs=3", cwd=baseline)

    rows = exp_rows(baseline)
    assert rows["lr-001"]["train"]["lr"] == 0.01 and rows["lr-001"]["train"]["epochs"] == 3
    assert rows["temp-bs64"]["train"]["batch_size"] == 64
    assert {"queued-a", "queued-b"} <= set(rows)

    client, runs = runs_by_experiment(baseline)
    assert {"lr-001", "temp-bs64", "queued-a", "queued-b"} <= set(runs)
    for name, epochs in (("lr-001", 3), ("temp-bs64", EPOCHS), ("queued-a", EPOCHS), ("queued-b", EPOCHS)):
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["git_commit"] == head
        assert run.info.run_name.startswith(f"{name} lr=")
        for metric in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == list(range(1, epochs + 1))
        assert client.list_artifacts(run.info.run_id, "plots"), name  # plot stage logged into the same run
    # Artifacts of runs made in DVC's temporary copies live at the real root, not in a deleted copy.
    assert all(runs[name].info.artifact_uri.startswith((baseline / "mlruns").as_uri()) for name in runs if name)


def test_bad_set_param_gives_the_params_error(baseline):
    done = sh("dvc", "exp", "run", "--temp", "-S", "train.lr=abc", cwd=baseline, check=False)
    assert done.returncode != 0
    assert "error: params.yaml: train.lr = 'abc': expected a number" in done.stdout + done.stderr


def test_params_metrics_and_plots_diff_against_the_committed_run(baseline):
    sh("dvc", "exp", "apply", "lr-001", cwd=baseline)
    params = json.loads(sh("dvc", "params", "diff", "--json", cwd=baseline).stdout)["params.yaml"]
    assert (params["train.lr"]["old"], params["train.lr"]["new"]) == (0.1, 0.01)
    assert (params["train.epochs"]["old"], params["train.epochs"]["new"]) == (EPOCHS, 3)
    assert "train.batch_size" not in params  # unchanged keys are not listed

    metrics = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=baseline).stdout)["metrics/eval.json"]
    for key in ("test_accuracy", "test_loss"):
        assert set(metrics[key]) == {"old", "new", "diff"} and metrics[key]["old"] != metrics[key]["new"]

    plots = json.loads(sh("dvc", "plots", "diff", "--json", "HEAD", cwd=baseline).stdout)["data"]
    for name, y_label in (("Loss", "cross-entropy loss"), ("Accuracy", "accuracy (fraction)")):
        (plot,) = plots[name]
        assert sorted(plot["revisions"]) == ["HEAD", "workspace"]  # both revisions, overlaid
        spec = json.dumps(plot["content"])
        assert f"{name} per epoch" in spec and y_label in spec and '"epoch"' in spec
        revs = {row["rev"] for row in plot["content"]["data"]["values"]}
        assert revs == {"HEAD", "workspace"}

    html = sh("dvc", "plots", "diff", "HEAD", "-o", str(baseline / "diff-html"), cwd=baseline)
    assert (baseline / "diff-html" / "index.html").exists(), html.stdout
    sh("git", "checkout", "--", "params.yaml", cwd=baseline)
