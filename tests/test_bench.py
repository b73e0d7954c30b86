"""The benchmark script runs end to end (tiny sizes: it is not a timed test) and the docs quote its recipe."""

import importlib.util
import re
import subprocess
import sys

import pytest

from support.synthetic import write_synthetic_mnist
from support.tools import REPO, clean_env

pytestmark = pytest.mark.slow


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_and_ends_with_its_machine_readable_line(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=256, n_test=128)
    env = clean_env(PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [
            sys.executable,
            "bench/bench.py",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--repeats",
            "2",
            "--tuned-repeats",
            "1",
            "--target",
            "0.9",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    number = r"\d+\.\d\d"
    fields = (
        f"speedup={number} tuned_accuracy=[01]\\.\\d{{4}} tuned_seconds={number} floor_ratio={number} "
        f"contended_ratio={number} parallel_ratio={number} article_epoch_seconds={number}"
    )
    assert re.fullmatch(fields, last), last
    assert "agree" in done.stdout and (tmp_path / "out" / "accuracy_vs_time.png").exists()


def test_performance_guide_gives_the_tuned_recipe_the_benchmark_times():
    assert load_bench().tuned_command() in (REPO / "docs" / "performance.md").read_text()
