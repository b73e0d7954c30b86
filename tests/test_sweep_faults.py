"""The search under what users and machines do to it: a signal at each point where it used to leave a trial
or a run RUNNING, SIGTERM to a launcher of two workers, a params.yaml that changed under a study, a space
where every trial diverges, workers that died without a word, and four processes electing one parent run
on the team server."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from mnist_pipeline.sweep import spec as specs
from mnist_pipeline.sweep.__main__ import main
from mnist_pipeline.sweep.storage import MAX_DIVERGED, open_storage, open_study, retire_stale, worker_name
from mnist_pipeline.tracking import study_runs

from support.studies import at_call, search_runs, start_sweep, sweep, trials, trials_if_any, worker_pid, write_sweep
from support.team_server import needs_postgres, process_alive

SETTLED = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "KILLED"}


def assert_settled(root: Path, failed: str = "KILLED") -> list[optuna.trial.FrozenTrial]:
    """No trial and no run RUNNING; each trial's run ended as its trial did (a failed one: `failed`)."""
    study, runs = trials(root), search_runs(root)
    assert not [t.number for t in study if t.state.name == "RUNNING"], study
    assert not [r.data.tags for r in runs if r.info.status == "RUNNING"]
    status = {r.data.tags["sweep_trial"]: r.info.status for r in runs if "sweep_trial" in r.data.tags}
    assert {str(t.number): {**SETTLED, "FAIL": failed}[t.state.name] for t in study} == status
    return study


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "n", "action", "when", "states"),
    [
        # As trial 0's run is made, before it is the active run (the start used to leave it RUNNING).
        ("mlflow.tracking.client:MlflowClient.create_run", 2, "SIGINT", "after", ["FAIL"]),
        # While trial 0's run waits for its epochs to reach the store (it stayed RUNNING, its trial FAILed).
        ("mnist_pipeline.tracking.run:Run.flush", 1, "SIGTERM", "before", ["COMPLETE"]),
        # In Optuna's ask, trial 1 made (it stayed RUNNING for good).
        ("optuna.study.study:Study.ask", 2, "SIGINT", "after", ["COMPLETE", "FAIL"]),
        # In Optuna's tell of trial 0 (exit 1 and a traceback, the trial RUNNING, its run FINISHED).
        ("optuna.study._optimize:_tell_with_warning", 1, "SIGTERM", "before", ["COMPLETE"]),
        # In the progress line after trial 0 (its trial and run were told: only the parent stayed RUNNING).
        ("mnist_pipeline.sweep.worker:Worker._progress", 1, "SIGINT", "before", ["COMPLETE"]),
        # Inside an epoch's computation: at once.
        ("mnist_pipeline.training.engine:train_one_epoch", 2, "SIGTERM", "before", ["FAIL"]),
    ],
    ids=["create_run", "flush", "ask", "tell", "progress", "epoch"],
)
def test_a_signal_anywhere_leaves_no_trial_or_run_running(folder, target, n, action, when, states):
    write_sweep(folder, trials=2, epochs=2, pruner="none")
    done = sweep(folder, "run", "tiny", command=at_call(target, n, action, when))
    assert done.returncode == 130, done.stderr
    kind = "Terminated" if action == "SIGTERM" else "KeyboardInterrupt"
    assert done.stderr.strip().splitlines()[-1].startswith(f"interrupted ({kind}); "), done.stderr
    assert [t.state.name for t in assert_settled(folder)] == states
    (parent,) = [r for r in search_runs(folder) if r.data.tags.get("sweep_parent") == "true"]
    assert parent.info.status == "KILLED"


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_it_and_its_workers_within_30_s(folder):
    write_sweep(folder, trials=6, epochs=400, pruner="none")
    launcher = start_sweep(folder, "run", "tiny", "--workers", "2")
    deadline = time.monotonic() + 180
    while len(running := [t for t in trials_if_any(folder) if t.user_attrs.get("epochs_trained")]) < 2:
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
        time.sleep(0.2)
    workers = {worker_pid(t) for t in running}
    assert len(workers) == 2
    launcher.send_signal(signal.SIGTERM)  # the launcher alone, as `kill`, `docker stop` or a CI cancel do
    sent = time.monotonic()
    try:
        _, err = launcher.communicate(timeout=60)
        while any(process_alive(pid) for pid in workers) and time.monotonic() - sent < 60:
            time.sleep(0.1)
    finally:
        for pid in [launcher.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    gone = time.monotonic() - sent
    assert launcher.returncode == 130 and gone < 30, (gone, err)
    assert not any(process_alive(pid) for pid in workers)
    # Each worker stopped through its own frame (exit 130), then the launcher.
    assert err.count("interrupted (Terminated); the trial in progress is marked failed") == 3, err
    study = assert_settled(folder)
    assert sorted(t.number for t in study if t.state.name == "FAIL") == sorted(t.number for t in running)
    (parent,) = [r for r in search_runs(folder) if r.data.tags.get("sweep_parent") == "true"]
    assert parent.info.status == "KILLED"


def test_a_study_takes_no_trials_on_other_params_yaml_values(folder):
    base = yaml.safe_load((folder / "params.yaml").read_text())
    spec = specs.load(folder / "sweep.yaml", "tiny", base)
    storage = open_storage(None, folder)
    open_study(spec, storage, spec.base(base))
    # What sweep.yaml sets or searches may differ; what changes no trial (where runs go) too.
    base["model"]["hidden"], base["train"]["lr"], base["tracking"]["experiment"] = [7], 0.5, "elsewhere"
    open_study(spec, storage, spec.base(base))
    base["train"]["augment"]["shear"], base["data"]["dataset"] = 5.0, "fashion-mnist"
    with pytest.raises(specs.SpecError) as refused:
        open_study(spec, storage, spec.base(base))
    assert str(refused.value) == (
        "study tiny in this storage was trained on other params.yaml values (data.dataset is fashion-mnist "
        "here, mnist in the study; train.augment.shear is 5.0 here, 0.0 in the study); its trials would not "
        "compare: restore those values, delete the study or use another --storage"
    )


@pytest.mark.slow
def test_run_and_promote_refuse_a_study_made_on_other_params_yaml_values(folder):
    write_sweep(folder, trials=1, epochs=1, pruner="none")
    assert sweep(folder, "run", "tiny").returncode == 0
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"]["augment"]["shear"] = 5.0  # as `dvc exp apply` of an experiment with shear would
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (("run", "tiny", "--trials", "2"), ("promote", "tiny")):
        done = sweep(folder, *command)
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.strip().splitlines() == [
            "error: study tiny in this storage was trained on other params.yaml values (train.augment.shear is 5.0 "
            "here, 0.0 in the study); its trials would not compare: restore those values, delete the study or use "
            "another --storage"
        ]
    assert len(trials(folder)) == 1


def test_a_new_study_s_parent_run_is_looked_at_again_after_the_settle_time(folder, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    monkeypatch.setenv(study_runs.SETTLE_ENV, "0.25")
    base = yaml.safe_load((folder / "params.yaml").read_text())
    spec = specs.load(folder / "sweep.yaml", "tiny", base)
    study = open_study(spec, open_storage(None, folder), spec.base(base))
    slept = []
    monkeypatch.setattr(study_runs.time, "sleep", slept.append)
    recorder = study_runs.Recorder(study, spec.settings(), spec.trial_params(base, {}))
    assert slept == [0.25]
    assert recorder.parent_id == study_runs.Recorder(study, spec.settings(), spec.trial_params(base, {})).parent_id
    assert slept == [0.25]  # a study that has its parent: taken without waiting


def test_the_hidden_params_option_is_gone(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    with pytest.raises(SystemExit) as refused:
        main(["run", "tiny", "--params", "other.yaml"])
    assert refused.value.code == 2 and "unrecognized arguments: --params" in capsys.readouterr().err


@pytest.mark.slow
def test_a_space_where_every_trial_diverges_stops_with_one_error_line(folder):
    write_sweep(
        folder, trials=50, epochs=2, params={"train.optimizer": "sgd"}, space={"train.lr": {"float": [1e5, 1e6]}}
    )
    done = sweep(folder, "run", "tiny", timeout=300)  # today: endless
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: study tiny: its last {MAX_DIVERGED} trials all diverged (epoch 1: training loss")
    assert line.endswith("the search stops: narrow sweep.yaml's space (lower learning rates) and run it again")
    study = assert_settled(folder, failed="FAILED")
    assert [t.state.name for t in study] == ["FAIL"] * MAX_DIVERGED
    (parent,) = [r for r in search_runs(folder) if r.data.tags.get("sweep_parent") == "true"]
    assert parent.info.status == "FAILED"


@pytest.mark.slow
def test_a_trial_that_never_started_keeps_no_worker_waiting(folder):
    # Its worker died between Optuna's ask and the first heartbeat: no heartbeat, so never found stale.
    # A worker (as `run --workers K` starts them) waits for the running trials when its own are done.
    storage = f"sqlite:///{folder / 'studies.db'}"
    write_sweep(folder, trials=2, epochs=1, pruner="none")
    ghost = optuna.create_study(study_name="tiny", storage=storage, direction="maximize").ask()
    done = sweep(folder, "worker", "tiny", "--storage", storage, timeout=240, MNIST_SWEEP_HEARTBEAT_S="1")
    assert done.returncode == 0, done.stderr
    after = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    assert after[ghost.number].state.name == "FAIL"
    (retry,) = [t for t in after if t.system_attrs.get("failed_trial") == ghost.number]
    assert retry.state.name == "COMPLETE"


@pytest.mark.slow
def test_a_worker_killed_outright_is_retired_when_the_study_runs_again(folder):
    # One worker, so no launcher to notice (an OOM kill, or the launcher killed with it).
    write_sweep(folder, trials=2, epochs=50, pruner="none")
    worker = start_sweep(folder, "run", "tiny")
    deadline = time.monotonic() + 120
    while not (running := [t for t in trials_if_any(folder) if t.user_attrs.get("epochs_trained")]):
        assert time.monotonic() < deadline and worker.poll() is None, worker.communicate()
        time.sleep(0.2)
    worker.kill()
    worker.communicate()
    again = sweep(folder, "run", "tiny", "--trials", "1")
    assert again.returncode == 0, again.stderr
    (dead,) = running
    assert f"sweep: trial {dead.number} had no live worker: failed and queued again" in again.stdout
    study = assert_settled(folder, failed="FAILED")
    assert study[dead.number].state.name == "FAIL"
    (retry,) = [t for t in study if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    (run,) = [r for r in search_runs(folder) if r.data.tags.get("sweep_trial") == str(dead.number)]
    assert run.data.tags["sweep_retried_by"] == str(retry.number)


@pytest.mark.slow
def test_only_a_gone_worker_of_this_place_is_retired(tmp_path):
    """A worker is host:pid:place; its trial is retired when the place is this one (this boot, this pid
    namespace) and the pid is gone, or is another process that started after the trial."""
    study = optuna.create_study(storage=open_storage(None, tmp_path), study_name="names")
    here, host = worker_name(os.getpid()).split(":")[2], socket.gethostname()
    names = {
        "alive": worker_name(os.getpid()),
        "dead": worker_name(_a_dead_pid()),
        "elsewhere": f"{host}:{_a_dead_pid()}:0123456789ab",  # another container's pid: not ours to judge
        "old name": f"{host}:{_a_dead_pid()}",  # made before places were: left to heartbeats
    }
    made = {}
    for label, name in names.items():
        trial = study.ask()
        trial.set_user_attr("worker", name)
        made[trial.number] = label
    earlier = subprocess.Popen(["sleep", "60"])  # started just before its trial: the worker, alive
    young = study.ask()
    young.set_user_attr("worker", f"{host}:{earlier.pid}:{here}")
    made[young.number] = "young"
    reused = study.ask()
    time.sleep(1.5)  # its pid, alive, started after it: another process (the check's slack is 0.5 s)
    later = subprocess.Popen(["sleep", "60"])
    try:
        reused.set_user_attr("worker", f"{host}:{later.pid}:{here}")
        made[reused.number] = "reused"
        retired = retire_stale(study)
    finally:
        for process in (earlier, later):
            process.kill()
            process.wait()
    assert sorted(made[n] for n in retired) == ["dead", "reused"]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == sorted(retired)


def _a_dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("slow", ["client", "server"])
def test_four_processes_at_once_elect_one_parent_run(team_server, folder, slow, monkeypatch):
    """Four `sweep run` against the team server look for a parent run at the same instant; one takes 8 s
    more to make its own: before taking its start time (a slow client: it comes last), or after (a
    slow server: the earliest, the others' 1 s later, comes last and is elected when the runs end)."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["tracking"]["experiment"] = f"election-{slow}"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    write_sweep(folder, trials=4, epochs=1, pruner="none")
    env = team_server.client_env("admin", team_server.admin_password)
    meeting = folder / "meeting"  # every process looks for a parent when the four have come
    together = ("mnist_pipeline.tracking.store:connect", 1, f"meet:{meeting}:4", "after")
    client, server = (
        "mlflow.tracking.client:MlflowClient.create_run",
        "mlflow.store.tracking.rest_store:RestStore.create_run",
    )
    late, others = {
        "client": ((client, 1, "sleep:8", "before"), ()),
        "server": ((server, 1, "sleep:8", "before"), ((client, 1, "sleep:1", "before"),)),
    }[slow]
    env[study_runs.SETTLE_ENV] = str(study_runs.settle_s())  # the default: four processes start the study at once
    processes = [start_sweep(folder, "run", "tiny", command=at_call(*together, *others), **env) for _ in range(3)]
    processes.append(start_sweep(folder, "run", "tiny", command=at_call(*together, late), **env))
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err
    assert len(list(meeting.iterdir())) == 4
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_server.admin_password)
    mlflow = MlflowClient(team_server.url)
    experiment = mlflow.get_experiment_by_name(f"election-{slow}-search")
    made = [r for r in mlflow.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)]
    parents = sorted((r for r in made if r.data.tags.get("sweep_parent") == "true"), key=lambda r: r.info.start_time)
    assert len(parents) == 4  # each made one, at the same instant
    (parent,) = [r for r in parents if r.info.lifecycle_stage == "active"]
    assert parent.info.run_id == parents[0].info.run_id  # the earliest
    children = [r for r in made if "sweep_trial" in r.data.tags]
    assert len(children) == len(trials(folder)) >= 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert not [r for r in made if r.info.status == "RUNNING"]
