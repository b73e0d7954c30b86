"""DistributedDataParallel: the same math as one process, one record, failures and signals stop every rank,
resume, and two machines (network namespaces) giving the same result."""

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed as dist

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.training import device, engine
from mnist_pipeline.training.distributed import World

from support.projects import assert_complete_run, project_runs, store
from support.stores import seed_store
from support.synthetic import write_synthetic_mnist
from support.tiny import TRAIN_ARGS, augmented, train_in_process, write_tiny_params
from support.tools import REPO, clean_env, free_port

# Enough test images that one flipped prediction (1/2048) is well inside the 0.003 accuracy bound.
N_TRAIN, N_TEST = 1024, 2048
SETTINGS = {"epochs": 3, "batch_size": 32, "lr": 0.1}
ACCURACY_BOUND, LOSS_BOUND = 0.003, 0.002  # per epoch, two processes against one


def _rank(rank: int, size: int, port: int, params, data_dir: Path, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        device.setup()
        train, test = load_split(data_dir, train=True), load_split(data_dir, train=False)
        training = engine.Training.create(params, len(train), torch.device("cpu"), size)
        records = list(engine.fit(training, train, test, params.train, split="test", world=World(rank, size, rank)))
        torch.save({"records": records, "weights": training.model.state_dict()}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True])
def test_two_ranks_end_with_identical_weights_and_the_curve_of_one_process(params, tmp_path, augment):
    data = write_synthetic_mnist(tmp_path / "data", N_TRAIN, N_TEST)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, **SETTINGS))
    # Augmented, each image gets the distortion it gets in one process: every rank draws the whole batch's.
    params = augmented(params) if augment else params
    mp.start_processes(_rank, args=(2, free_port(), params, data, tmp_path), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, weights in ranks[0]["weights"].items():
        assert torch.equal(weights, ranks[1]["weights"][name]), name
    assert ranks[0]["records"] == ranks[1]["records"]  # the same summed figures on every rank

    one, _ = train_in_process(params, data)
    for alone, shared in zip(one, ranks[0]["records"], strict=True):
        assert abs(alone["test_accuracy"] - shared["test_accuracy"]) <= ACCURACY_BOUND, (alone, shared)
        assert abs(alone["test_loss"] - shared["test_loss"]) <= LOSS_BOUND, (alone, shared)
        assert abs(alone["train_loss"] - shared["train_loss"]) <= LOSS_BOUND, (alone, shared)
    assert one != ranks[0]["records"]  # really another summation order, not the one-process path


# --- The train stage with train.processes = 2, as DVC runs it ---


def make_workdir(folder: Path, **train) -> Path:
    write_synthetic_mnist(folder / "data", N_TRAIN, N_TEST)
    write_tiny_params(folder / "params.yaml", **{**SETTINGS, **train})
    seed_store(folder)
    return folder


def stage_env(workdir: Path, **extra: str) -> dict:
    return clean_env(
        **{"PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", **extra}
    )


def train(workdir: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.stages.train", *TRAIN_ARGS],
        cwd=workdir,
        env=stage_env(workdir, **extra),
        capture_output=True,
        text=True,
        timeout=600,
    )


def history(workdir: Path) -> list[dict]:
    return json.loads((workdir / "metrics" / "history.json").read_text())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = make_workdir(tmp_path_factory.mktemp("ddp"), processes=2)
    return workdir, train(workdir)


@pytest.mark.slow
def test_two_processes_make_one_complete_run_tagged_with_the_world_size(two_processes):
    workdir, done = two_processes
    assert done.returncode == 0, done.stderr
    assert "rank 0 of 2" in done.stdout and "rank 1 of 2" in done.stdout
    assert done.stdout.count("epoch: 3,") == 1  # rank 0 alone reports epochs
    (run,) = project_runs(workdir)
    assert_complete_run(store(workdir), run.info.run_id, SETTINGS["epochs"])
    assert run.data.tags["world_size"] == "2" and run.data.params["train.processes"] == "2"


@pytest.mark.slow
def test_two_processes_match_one_and_rerun_byte_identically(two_processes, tmp_path):
    workdir, _ = two_processes
    alone = make_workdir(tmp_path / "one")
    assert train(alone).returncode == 0
    for a, b in zip(history(alone), history(workdir), strict=True):
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= ACCURACY_BOUND, (a, b)
        assert abs(a["test_loss"] - b["test_loss"]) <= LOSS_BOUND, (a, b)
    again = make_workdir(tmp_path / "again", processes=2)
    assert train(again).returncode == 0
    for name in ("metrics/history.json", "models/model.pt"):
        assert (again / name).read_bytes() == (workdir / name).read_bytes(), name


@pytest.mark.slow
def test_a_batch_that_does_not_split_is_refused(tmp_path):
    workdir = make_workdir(tmp_path, processes=3)
    done = train(workdir)
    assert done.returncode == 1
    assert done.stderr == (
        "error: params.yaml: train.batch_size = 32: must divide by the 3 processes that share each batch\n"
    )


FAIL_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    from mnist_pipeline.training import scoring
    from mnist_pipeline.errors import DataError
    evaluate, calls = scoring.evaluate, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DataError("injected: rank 1 lost its test data")
        return evaluate(*args, **kwargs)

    scoring.evaluate = failing
"""


@pytest.mark.slow
def test_a_failure_on_one_rank_stops_all_and_fails_the_run(tmp_path):
    workdir = make_workdir(tmp_path / "work", processes=2)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_ON_RANK_1)  # runs at start-up in every rank
    done = train(workdir, PYTHONPATH=f"{hook}:{REPO / 'src'}")
    assert done.returncode == 1
    assert "error: injected: rank 1 lost its test data" in done.stderr  # that rank's own message
    assert "error: stopped because another process failed: rank 1: injected: rank 1 lost its test data" in done.stderr
    assert "error: training stopped: rank 1 failed (exit code 1)" in done.stderr
    assert [r.info.status for r in project_runs(workdir)] == ["FAILED"]
    assert not (workdir / "models" / "model.pt").exists()


def processes_of(workdir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"mnist_pipeline.stages.train.*{workdir}"], capture_output=True, text=True)
    return found.stdout.split()


LONGER = {"processes": 2, "epochs": 4, "batch_size": 4}  # epochs long enough for a signal to land in one


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    workdir = make_workdir(tmp_path_factory.mktemp("straight"), **LONGER)
    assert train(workdir).returncode == 0
    return history(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_rank_and_a_rerun_resumes(tmp_path, sig, uninterrupted):
    workdir = make_workdir(tmp_path, **LONGER)
    # The data folder as an absolute path, so that pgrep finds every process of this run by it.
    args = [sys.executable, "-m", "mnist_pipeline.stages.train", *TRAIN_ARGS]
    args[args.index("--data") + 1] = str(workdir / "data")
    proc = subprocess.Popen(
        args, cwd=workdir, env=stage_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = workdir / "models" / "train_state.pt"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert processes_of(workdir) == []  # no rank left behind
    assert [r.info.status for r in project_runs(workdir)] == ["KILLED"]
    if sig == signal.SIGINT:
        return  # the rerun reads what the last whole epoch saved, whichever signal came: one rerun checks it

    resumed = train(workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"resuming after epoch \d", resumed.stdout)
    (run,) = project_runs(workdir)  # the same run, reopened
    assert run.info.status == "FINISHED"
    assert history(workdir) == uninterrupted


# --- Two machines: two network namespaces joined by a veth pair, one rank each ---


@pytest.mark.slow
def test_two_machines_with_torchrun_give_the_two_process_result(two_hosts, two_processes, tmp_path):
    reference, _ = two_processes
    workdir = make_workdir(tmp_path)  # train.processes stays 1: torchrun decides the world size
    host, rdzv_id = two_hosts["a"][2], uuid.uuid4().hex
    nodes = []
    for name, is_host in (("a", 1), ("b", 0)):  # docs/distributed.md's command, one per machine
        ns, veth, address = two_hosts[name]
        command = [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={host}:29400",
            f"--rdzv-id={rdzv_id}",
            f"--rdzv-conf=is_host={is_host}",
            f"--local-addr={address}",
            "-m",
            "mnist_pipeline.stages.train",
            *TRAIN_ARGS,
        ]
        nodes.append(
            subprocess.Popen(
                command,
                cwd=workdir,
                env=stage_env(workdir, GLOO_SOCKET_IFNAME=veth),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=600) for proc in nodes]
    for proc, (out, err) in zip(nodes, outputs, strict=True):
        assert proc.returncode == 0, out + err
    assert "rank 0 of 2" in outputs[0][0] and "rank 1 of 2" in outputs[1][0]
    # The same world size and the same math: the very bytes of the two-process run on one machine.
    for name in ("metrics/history.json", "models/model.pt"):
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name
    (run,) = project_runs(workdir)
    assert run.data.tags["world_size"] == "2" and run.info.status == "FINISHED"
