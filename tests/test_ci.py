"""CI's pieces: the GitHub workflow passes a real linter, and the metrics comparison gates correctly."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.compare import compare, gated_numbers

from conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


@pytest.fixture
def actionlint() -> str:
    path = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert path, "actionlint is a dev dependency (pyproject.toml)"
    return path


def test_workflow_passes_actionlint(actionlint):
    done = subprocess.run([actionlint, str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("github.base_ref", "github.base_reff"))
    done = subprocess.run([actionlint, str(broken)], capture_output=True, text=True)
    assert done.returncode == 1 and 'property "base_reff" is not defined' in done.stdout


def test_workflow_retrains_and_compares():
    text = WORKFLOW.read_text()
    for step in ("make test", "make repro", "mnist_pipeline.compare --against HEAD --tolerance",
                 "dvc params diff", "dvc metrics diff", "dvc plots diff", "GITHUB_STEP_SUMMARY"):
        assert step in text


HISTORY = [{"epoch": 1, "test_accuracy": 0.5, "test_loss": 1.2, "train_loss": 1.3}]
EVAL = {"test_accuracy": 0.9147, "test_loss": 0.2966, "per_class": {"0": {"precision": 0.95}},
        "confusion_matrix": [[956, 0], [1, 3]]}


def as_bytes(data) -> bytes:
    return json.dumps(data).encode()


def test_gated_numbers_finds_test_metrics_anywhere():
    assert gated_numbers(HISTORY) == {"0.test_accuracy": 0.5, "0.test_loss": 1.2}
    assert gated_numbers(EVAL) == {"test_accuracy": 0.9147, "test_loss": 0.2966}


def test_identical_bytes_pass_at_tolerance_zero():
    assert compare("eval.json", as_bytes(EVAL), as_bytes(EVAL), 0) == []


def test_any_difference_fails_at_tolerance_zero():
    moved = {**EVAL, "test_loss": 0.29660001}
    assert compare("eval.json", as_bytes(EVAL), as_bytes(moved), 0) != []


@pytest.mark.parametrize(("moved", "passes"), [(0.0015, True), (0.0025, False)])
def test_tolerance_gates_accuracy_and_loss(moved, passes):
    other = {**EVAL, "test_accuracy": EVAL["test_accuracy"] - moved}
    problems = compare("eval.json", as_bytes(EVAL), as_bytes(other), 0.002)
    assert (problems == []) == passes, problems


def test_per_epoch_history_is_gated_too():
    other = [{**HISTORY[0], "test_loss": 1.21}]
    assert compare("history.json", as_bytes(HISTORY), as_bytes(other), 0.002) == [
        "history.json: 0.test_loss moved by 0.010000 > 0.002"]


def test_a_different_number_of_epochs_fails():
    assert "differ in shape" in compare("history.json", as_bytes(HISTORY), as_bytes(HISTORY * 2), 0.002)[0]
