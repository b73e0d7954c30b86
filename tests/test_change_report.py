"""make report on a real git + DVC project with two commits of different params: report/report.md holds
the params and metrics diffs as tables, and every plot of the diff as an image file beside it."""

import json
import re
import subprocess

import pytest
from PIL import Image

from support.tools import clean_env, sh

pytestmark = pytest.mark.slow


def report(root, *args: str) -> subprocess.CompletedProcess:
    """What `make report` runs (BASE as --base), in the project's own code."""
    command = ["python", "-m", "mnist_pipeline.evaluation.change_report", *args]
    return sh(*command, cwd=root, env=clean_env(PYTHONPATH="src"), check=False)


def table_row(text: str, name: str) -> list[str]:
    """The cells of the markdown table row whose second cell is `name`."""
    (row,) = [line for line in text.splitlines() if re.match(rf"\|[^|]*\| {re.escape(name)} +\|", line)]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_the_report_has_both_diff_tables_and_every_plot_as_an_image(two_commits):
    done = report(two_commits, "--base", "HEAD~1")
    assert done.returncode == 0 and done.stdout == "report: wrote report/report.md\n", done.stderr
    text = (two_commits / "report" / "report.md").read_text()

    assert table_row(text, "train.lr") == ["params.yaml", "train.lr", "0.1", "0.05"]
    old, new = (
        json.loads(sh("git", "show", f"{rev}:metrics/eval.json", cwd=two_commits).stdout) for rev in ("HEAD~1", "HEAD")
    )
    for metric in ("test_accuracy", "test_loss"):
        assert old[metric] != new[metric]
        cells = table_row(text, metric)
        assert cells[0] == "metrics/eval.json"
        assert [float(cells[2]), float(cells[3])] == pytest.approx([old[metric], new[metric]], abs=1e-5), cells

    plots = json.loads(sh("dvc", "plots", "diff", "HEAD~1", "--json", cwd=two_commits).stdout)["data"]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == sum(len(renders) for renders in plots.values()) >= 7
    for name in images:
        with Image.open(two_commits / "report" / name) as image:
            image.load()  # decodes every pixel: a truncated or corrupt file raises
            assert image.width > 100 and image.height > 100, name


def test_a_bad_base_is_one_error_line_and_the_last_report_stays(two_commits):
    assert report(two_commits, "--base", "HEAD~1").returncode == 0
    before = (two_commits / "report" / "report.md").read_bytes()
    done = report(two_commits, "--base", "no-such-rev")
    assert done.returncode == 1 and done.stderr.splitlines() == [
        "error: BASE=no-such-rev: not a git revision here (try HEAD, HEAD~1, main, origin/main)"
    ]
    assert (two_commits / "report" / "report.md").read_bytes() == before
    assert [p.name for p in two_commits.iterdir() if p.name.startswith(".report")] == []
