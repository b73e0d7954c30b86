"""The benchmark scripts run end to end (tiny sizes: they are not timed tests) and the docs run the
tuned recipe by name."""

import importlib.util
import re
import subprocess
import sys
from types import ModuleType

import optuna
import pytest
import yaml

from mnist_pipeline.sweep.storage import open_storage

from support.synthetic import write_synthetic_mnist
from support.tools import REPO, clean_env

pytestmark = pytest.mark.slow


def load_bench(name: str = "bench") -> ModuleType:
    """bench/NAME.py as a module: its functions and constants, without running it."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
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
            "--cnn-repeats",
            "1",
            "--target",
            "0.9",
            "--out",
            str(tmp_path / "out"),
            "--inference-calls",
            "30",
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
        f"contended_ratio={number} parallel_ratio={number} article_epoch_seconds={number} "
        f"cnn_epoch_seconds={number} cnn_speedup={number} bf16_floor_ratio={number}"
    )
    for kind in ("mlp", "cnn"):  # onnxruntime against PyTorch
        fields += (
            f" {kind}_onnx_single_speedup={number} {kind}_onnx_batch_speedup={number} "
            f"{kind}_onnx_single_us=\\d+ {kind}_onnx_batch_ms={number}"
        )
    assert re.fullmatch(fields, last), last
    assert "agree" in done.stdout and (tmp_path / "out" / "accuracy_vs_time.png").exists()
    assert "as plain fp32 NCHW autograd" in done.stdout and "bf16 floor   :" in done.stdout
    assert "tuned        : recipe mlp-best: dvc exp run -n mlp-best -S experiment=mlp-best\n" in done.stdout


def test_performance_guide_runs_the_recipe_the_benchmark_times():
    name = load_bench().TUNED_RECIPE
    assert (REPO / "conf" / "experiment" / f"{name}.yaml").is_file()
    assert f"dvc exp run -n {name} -S experiment={name}\n" in (REPO / "docs" / "performance.md").read_text()


BENCH_ENV = clean_env(PYTHONPATH=str(REPO / "src"))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A project folder with a finished 8-trial hyperband study `tiny` on synthetic data, and its
    trials. The benches only read the study: both tests share it."""
    project = tmp_path_factory.mktemp("tiny_study")
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_synthetic_mnist(project / "data" / "mnist", n_train=700, n_test=8)
    study = {
        "trials": 8,
        "epochs": 4,
        "validation": 100,
        "pruner": "hyperband",
        "seed": 0,
        "params": {"model.kind": "mlp", "model.hidden": [16]},
        "space": {"train.lr": {"float": [0.001, 0.3], "log": True}},
    }
    (project / "sweep.yaml").write_text(yaml.safe_dump({"studies": {"tiny": study}}))
    run = [sys.executable, "-m", "mnist_pipeline.sweep", "run", "tiny"]
    assert subprocess.run(run, cwd=project, env=BENCH_ENV, capture_output=True, timeout=300).returncode == 0
    return project, optuna.load_study(study_name="tiny", storage=open_storage(None, project)).get_trials()


def run_bench(script: str, *args: str, cwd, ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "bench" / script), *args]
    done = subprocess.run(command, cwd=cwd, env=BENCH_ENV, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def last_fields(lines: list[str]) -> dict[str, str]:
    return dict(pair.split("=") for pair in lines[-1].split())


def test_pruning_bench_trains_a_study_s_pruned_trials_to_their_budget(tiny_study):
    project, trials = tiny_study
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, "hyperband pruned nothing: the bench would have nothing to train"
    lines = run_bench("pruning.py", "tiny", "--workers", "1", cwd=project).stdout.splitlines()
    # Each pruned trial trained again, and the best complete one, which repeats its value.
    assert sum(" unpruned " in line for line in lines) == len(pruned) + 1
    fields = last_fields(lines)
    assert int(fields["epochs"]) == sum(t.user_attrs["epochs_trained"] for t in trials)
    assert int(fields["unpruned_epochs"]) == 4 * len(trials)
    assert float(fields["best_val"]) == round(max(t.value for t in trials if t.state.name == "COMPLETE"), 4)
    assert float(fields["best_val_unpruned"]) >= float(fields["best_val"])


def test_variants_bench_chooses_on_validation_within_the_tolerance(tiny_study):
    project, trials = tiny_study
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    # A variant that cannot learn (lr 1e-6) gives up clean accuracy, one that can stays near the best.
    variants = ["train.lr=0.000001", f"train.lr={best.params['train.lr']} model.hidden=[32]"]
    lines = run_bench(
        "variants.py", "tiny", *variants, "--workers", "1", "--tolerance", "0.05", cwd=project
    ).stdout.splitlines()
    clean = [float(re.search(r"val_accuracy ([0-9.]+)", line)[1]) for line in lines if "val_accuracy" in line]
    assert len(clean) == 3 and clean[0] == round(best.value, 4)  # the best trial first, repeating its value
    assert clean[1] < clean[0] - 0.05
    chosen = int(last_fields(lines)["chosen"])
    assert chosen != 1 and clean[chosen] >= clean[0] - 0.05
    # The rule itself: the most robust of those within the tolerance of the best trial's clean accuracy.
    scores = [(0.990, 0.50), (0.950, 0.90), (0.989, 0.60), (0.995, 0.55)]
    assert [load_bench("variants").choose(scores, t) for t in (0.0, 0.001, 0.05)] == [3, 2, 1]
    bad = run_bench("variants.py", "tiny", "train.lr=-1", cwd=project, ok=False)
    assert bad.stderr.startswith("error: ") and "train.lr" in bad.stderr and not bad.stdout
