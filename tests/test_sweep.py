"""The search (python -m mnist_pipeline.sweep): sweep.yaml refused in one line before any work, trials
scored on a validation split without the test files, every trial a complete child run, deterministic
with one worker, Ctrl-C and a killed worker, and the winner promoted to a DVC experiment."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from mnist_pipeline import recipes
from mnist_pipeline.config import Params, dotted, flatten, from_dict
from mnist_pipeline.sweep import promote
from mnist_pipeline.sweep import spec as specs
from mnist_pipeline.sweep.__main__ import main
from mnist_pipeline.sweep.storage import JOURNAL

from support.projects import make_project, store
from support.studies import at_call, search_runs, start_sweep, sweep, trials, trials_if_any, worker_pid, write_sweep
from support.tools import REPO, clean_env, sh


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3, "batches": 2}, "studies.tiny: unknown key batches"),
        ({"space": {"train.lr": {"float": [0.1, 0.01]}}}, "an empty or inverted range"),
        ({"space": {"train.lr": {"float": [0.1, 0.1]}}}, "an empty or inverted range"),
        (
            {"space": {"train.batch_size": {"int": [0, 64]}}},
            "params.yaml would refuse: .*train.batch_size = 0: must be >= 1",
        ),
        ({"space": {"train.optimizer": {"choices": ["sgd", "adam"]}}}, "train.optimizer = 'adam': expected one of"),
        ({"params": {"model.kind": "rnn"}}, "model.kind = 'rnn': expected one of mlp, cnn"),
        ({"space": {"train.lrate": {"float": [0.01, 0.1]}}}, "train.lrate is not a params.yaml key"),
        ({"space": {"train.lr": {"float": [0.0, 0.1], "log": True}}}, "true only for a range above 0"),
        ({"pruner": "asha"}, "pruner = 'asha': expected one of hyperband, median, none"),
    ],
)
def test_a_bad_sweep_file_is_one_error_line_before_any_work(bare_folder, change, message, monkeypatch, capsys):
    write_sweep(bare_folder, **change)
    monkeypatch.chdir(bare_folder)
    for variable in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "MNIST_SWEEP_STORAGE"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["run", "tiny"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bare_folder / 'sweep.yaml'}: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not (bare_folder / JOURNAL).exists() and not (bare_folder / "mlflow.db").exists()


@pytest.mark.slow
def test_an_unknown_study_and_an_unreachable_storage_are_one_error_line(bare_folder):
    unknown = sweep(bare_folder, "run", "mlp2")
    assert unknown.returncode == 1 and unknown.stderr.strip() == (
        f"error: {bare_folder / 'sweep.yaml'}: no study 'mlp2' (studies: tiny)"
    )
    started = time.monotonic()
    down = sweep(bare_folder, "run", "tiny", "--storage", "postgresql+psycopg2://studies@127.0.0.1:9/studies")
    assert down.returncode == 1 and time.monotonic() - started < 30
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: study storage postgresql+psycopg2://studies@127.0.0.1:9/studies cannot be used:"
    ), down.stderr
    assert "refused" in lines[0]
    assert not (bare_folder / JOURNAL).exists() and not (bare_folder / "mlflow.db").exists()


def test_values_drawn_are_checked_by_the_params_code():
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    with pytest.raises(specs.ParamsError, match="model.dropout = 1.5: must be in"):
        specs.with_values(base, {"model.dropout": 1.5}, "trial")
    params = specs.with_values(base, {"model.hidden": (512, 256), "train.lr": "1e-3"}, "trial")
    assert params.model.hidden == (512, 256) and params.train.lr == 0.001


@pytest.mark.slow
def test_one_worker_repeats_a_fresh_study_exactly_and_never_reads_the_test_files(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("again")
    for name in ("params.yaml", "sweep.yaml"):
        (other / name).write_text((folder / name).read_text())
    (other / "data").symlink_to(folder / "data")
    # Both at once: one worker each, two fresh studies.
    runs = [start_sweep(root, "run", "tiny") for root in (folder, other)]
    (out, err), (_, other_err) = (run.communicate(timeout=600) for run in runs)
    assert [run.returncode for run in runs] == [0, 0], err + other_err
    first = subprocess.CompletedProcess([], 0, out, err)
    a, b = trials(folder), trials(other)
    assert len(a) == 6 and all(t.state.name in ("COMPLETE", "PRUNED") for t in a)
    assert [(t.params, t.value, t.state, t.intermediate_values) for t in a] == [
        (t.params, t.value, t.state, t.intermediate_values) for t in b
    ]
    assert len({tuple(sorted(t.params.items())) for t in a}) == 6  # six different trials
    # One progress line per trial, then the best.
    lines = [line for line in first.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 6 and all(
        "val_accuracy" in line and " s) " in line and "best: trial" in line for line in lines
    ), first.stdout


@pytest.mark.slow
def test_every_trial_is_a_complete_child_run_of_the_study(folder):
    done = sweep(folder, "run", "tiny", "--workers", "2")
    assert done.returncode == 0, done.stderr
    client = store(folder)
    experiment = client.get_experiment_by_name("mnist-mlp-search")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    children = [r for r in runs if r is not parent]
    study_trials = trials(folder)
    assert sorted(int(r.data.tags["sweep_trial"]) for r in children) == [t.number for t in study_trials]
    assert len(study_trials) >= 6 and len({tuple(sorted(t.params.items())) for t in study_trials}) == len(study_trials)
    for run in children:
        trial = study_trials[int(run.data.tags["sweep_trial"])]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep_study"] == "tiny"
        assert run.info.status == "FINISHED"
        assert run.data.tags["sweep_state"] == {"COMPLETE": "complete", "PRUNED": "pruned"}[trial.state.name]
        assert run.data.params["train.epochs"] == "3" and run.data.params["train.lr"] == str(trial.params["train.lr"])
        assert not any(name.startswith("test_") for name in run.data.metrics)
        epochs = trial.user_attrs["epochs_trained"]
        for metric in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == list(range(1, epochs + 1))
        assert [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == pytest.approx(
            list(trial.intermediate_values.values())
        )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {
        "figures/optimization_history.png",
        "figures/param_importances.png",
        "figures/parallel_coordinate.png",
        "figures/slice.png",
    } <= artifacts
    best = max((t for t in study_trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    fragment = yaml.safe_load(
        client.download_artifacts(parent.info.run_id, "best_params.yaml", str(folder))
        and (folder / "best_params.yaml").read_text()
    )
    assert fragment["train"]["lr"] == best.params["train.lr"] and fragment["train"]["epochs"] == 3
    assert fragment["model"]["hidden"] == [32]
    assert parent.data.metrics["best_val_accuracy"] == best.value


@pytest.mark.slow
def test_ctrl_c_fails_the_trial_and_run_again_continues_the_study(folder):
    # Ctrl-C at a chosen point: trial 1, as its second epoch is logged (no pruning: 3 epochs a trial).
    write_sweep(folder, trials=3, epochs=3, pruner="none")
    done = sweep(folder, "run", "tiny", command=at_call("mnist_pipeline.tracking.run:Run.log_epoch", 5, "SIGINT"))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "interrupted (KeyboardInterrupt); the trial in progress is marked failed; `run` again continues"
    )
    before = trials(folder)
    assert [(t.state.name, t.user_attrs["epochs_trained"]) for t in before] == [("COMPLETE", 3), ("FAIL", 2)]
    runs = {r.data.tags.get("sweep_trial", "parent"): r.info.status for r in search_runs(folder)}
    assert runs == {"0": "FINISHED", "1": "KILLED", "parent": "KILLED"}
    # Continued with the same settings: the failed trial stays failed, nothing finished is repeated.
    again = sweep(folder, "run", "tiny")
    assert again.returncode == 0, again.stderr
    after = trials(folder)
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert (after[0].params, after[0].value) == (before[0].params, before[0].value)
    # Other settings would mix trials that do not compare: refused.
    write_sweep(folder, trials=3, epochs=4, pruner="none")
    other = sweep(folder, "run", "tiny")
    assert other.returncode == 1 and "made with other settings" in other.stderr


@pytest.mark.slow
def test_promote_makes_the_winner_a_reproducible_dvc_experiment(tmp_path):
    root = make_project(tmp_path)
    write_sweep(root, trials=3, epochs=2, validation=100, pruner="none")
    env = clean_env(PYTHONPATH=str(REPO / "src"))
    ran = sh(sys.executable, "-m", "mnist_pipeline.sweep", "run", "tiny", cwd=root, env=env)
    best = max((t for t in trials(root) if t.state.name == "COMPLETE"), key=lambda t: t.value)
    promoted = sh(sys.executable, "-m", "mnist_pipeline.sweep", "promote", "tiny", cwd=root, env=env)
    found = re.search(
        r"promote: tiny-best: validation accuracy (\S+) chose it \(trial (\d+)\); test accuracy (\S+)", promoted.stdout
    )
    assert found, promoted.stdout + ran.stdout
    assert (float(found[1]), int(found[2])) == (round(best.value, 4), best.number)
    # The winner is the recipe tiny-best: the trial's values that differ from the defaults, under its header.
    recipe = (root / "conf" / "experiment" / "tiny-best.yaml").read_text()
    assert recipe.startswith(
        f"# @package _global_\n# The `tiny` search's winner, chosen on validation: trial {best.number}, "
        f"validation accuracy {best.value:.4f}.\n"
    )
    defaults = flatten(from_dict(Params, recipes.defaults(root), source="conf"))
    changed = {k: v for k, v in {**best.params, "model.hidden": [32], "train.epochs": 2}.items() if v != defaults[k]}
    assert dotted(recipes.recipe(root, "tiny-best")) == changed
    assert "dvc exp run --temp -n tiny-best -S experiment=tiny-best" in promoted.stdout
    shown = sh("dvc", "exp", "show", "--json", cwd=root).stdout
    assert "tiny-best" in shown
    # Its params are the trial's, its run is recorded and registered like any other.
    client = store(root)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("mnist-mlp").experiment_id], filter_string="tags.dvc_experiment = 'tiny-best'"
    )
    assert run.info.status == "FINISHED" and run.data.params["train.lr"] == str(best.params["train.lr"])
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.hidden"] == "[32]"
    assert client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert float(found[3]) == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-4)
    # Byte for byte: applied and reproduced, its metrics come out the same.
    sh("dvc", "exp", "apply", "tiny-best", cwd=root)
    expected = {name: (root / "metrics" / name).read_bytes() for name in ("history.json", "eval.json")}
    for stage in ("train", "evaluate"):  # the download stage would fetch: there is no network here
        sh("dvc", "repro", "-f", "-s", stage, cwd=root)
    assert {name: (root / "metrics" / name).read_bytes() for name in expected} == expected
    # A promote that fails (its tracking server is down) keeps the winner there was; one that works replaces it.
    sh("git", "checkout", "--", ".", cwd=root)
    shutil.rmtree(root / ".dvc" / "cache" / "runs")  # no stage restored from DVC's run cache: the train stage runs
    down = {**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    failed = sh(sys.executable, "-m", "mnist_pipeline.sweep", "promote", "tiny", cwd=root, env=down, check=False)
    assert failed.returncode == 1 and "(the previous tiny-best is kept)" in failed.stderr, failed.stderr
    assert promote.test_accuracy("tiny-best", root) == float(found[3])
    sh(sys.executable, "-m", "mnist_pipeline.sweep", "promote", "tiny", cwd=root, env=env)
    names = {
        e["name"]
        for b in json.loads(sh("dvc", "exp", "show", "--json", cwd=root).stdout)
        for e in b["experiments"] or []
    }
    assert "tiny-best" in names and "tiny-best-previous" not in names


@pytest.mark.slow
def test_a_killed_local_worker_s_trial_is_run_again_by_the_other(folder):
    write_sweep(folder, trials=4, epochs=30)
    launcher = start_sweep(folder, "run", "tiny", "--workers", "2")
    deadline = time.monotonic() + 120
    while not (
        running := [
            t for t in trials_if_any(folder) if t.user_attrs.get("epochs_trained") and t.state.name == "RUNNING"
        ]
    ):
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
        time.sleep(0.1)
    victim = running[0]
    os.kill(worker_pid(victim), signal.SIGKILL)
    out, err = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, err
    assert f"died (SIGKILL); trial {victim.number} failed and queued again" in out
    study = trials(folder)
    assert study[victim.number].state.name == "FAIL"
    (retry,) = [t for t in study if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.params == victim.params
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study) >= 4
    runs = search_runs(folder)
    (dead,) = [r for r in runs if r.data.tags.get("sweep_trial") == str(victim.number)]
    assert dead.info.status == "FAILED" and dead.data.tags["sweep_retried_by"] == str(retry.number)
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_bad_params_file_is_params_yaml_s_own_error_line(bare_folder, monkeypatch, capsys):
    # params.yaml is checked first, as the pipeline checks it, so its error names params.yaml itself.
    params = bare_folder / "params.yaml"
    params.write_text(params.read_text() + "bogus: 1\n")
    monkeypatch.chdir(bare_folder)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert main(["run", "tiny"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {params}: "), lines
    assert not (bare_folder / JOURNAL).exists() and not (bare_folder / "mlflow.db").exists()
