"""The benchmark scripts run end to end (tiny sizes: they are not timed tests) and the docs quote the
tuned recipe."""

import importlib.util
import re
import subprocess
import sys

import optuna
import pytest
import yaml

from mnist_pipeline.sweep.search import open_storage

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


def test_pruning_bench_trains_a_study_s_pruned_trials_to_their_budget(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_synthetic_mnist(tmp_path / "data" / "mnist", n_train=700, n_test=8)
    study = {
        "trials": 8,
        "epochs": 4,
        "validation": 100,
        "pruner": "hyperband",
        "seed": 0,
        "params": {"model.kind": "mlp", "model.hidden": [16]},
        "space": {"train.lr": {"float": [0.001, 0.3], "log": True}},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"studies": {"tiny": study}}))
    env = clean_env(PYTHONPATH=str(REPO / "src"))
    run = [sys.executable, "-m", "mnist_pipeline.sweep", "run", "tiny"]
    assert subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, timeout=300).returncode == 0
    trials = optuna.load_study(study_name="tiny", storage=open_storage(None, tmp_path)).get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, "hyperband pruned nothing: the bench would have nothing to train"
    bench = [sys.executable, str(REPO / "bench" / "pruning.py"), "tiny", "--workers", "1"]
    done = subprocess.run(bench, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each pruned trial trained again, and the best complete one, which repeats its value.
    assert sum(" unpruned " in line for line in done.stdout.splitlines()) == len(pruned) + 1
    fields = dict(pair.split("=") for pair in done.stdout.strip().splitlines()[-1].split())
    assert int(fields["epochs"]) == sum(t.user_attrs["epochs_trained"] for t in trials)
    assert int(fields["unpruned_epochs"]) == 4 * len(trials)
    assert float(fields["best_val"]) == round(max(t.value for t in trials if t.state.name == "COMPLETE"), 4)
    assert float(fields["best_val_unpruned"]) >= float(fields["best_val"])
