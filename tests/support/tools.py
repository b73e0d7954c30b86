"""Tools run as a user runs them: this checkout, this venv, and none of the developer's own settings."""

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The real datasets, where the environment offers them (CI sets both to local copies).
MNIST_MIRROR = os.environ.get("MNIST_MIRROR", "")
FASHION_MNIST_MIRROR = os.environ.get("FASHION_MNIST_MIRROR", "")

# Neither the user's git and DVC settings nor their MLflow, DVC or data variables reach the tools
# the tests run: a test behaves the same on every machine and for every user.
PRIVATE_CONFIG = Path(tempfile.mkdtemp(prefix="mnist-pipeline-tests-config-"))
atexit.register(shutil.rmtree, PRIVATE_CONFIG, ignore_errors=True)
LEAKY = ("MLFLOW_", "DVC_", "MNIST_MIRROR", "FASHION_MNIST_MIRROR", "GIT_")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a tool run as a user would run it: this venv's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY)}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        DVC_GLOBAL_CONFIG_DIR=str(PRIVATE_CONFIG / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(PRIVATE_CONFIG / "dvc-system"),
        DVC_NO_ANALYTICS="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )
    return env


def sh(*cmd: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command as a user would (see clean_env); fail with its output unless `check` is off."""
    done = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def run_queue(root: Path, workers: int, env: dict | None = None, wait_s: float = 900) -> str:
    """`dvc queue start -j N`, then wait until the queue is empty; every task must succeed (a
    failure shows that task's log). Returns `dvc queue status`.

    Its output goes to a file, not a pipe: the workers it leaves running inherit its stdout, and a
    pipe would stay open (and a reader blocked) for as long as they live."""
    env = env or clean_env()
    with open(root / "queue-start.log", "w") as log:
        done = subprocess.run(
            ["dvc", "queue", "start", "-j", str(workers)], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    assert done.returncode == 0, (root / "queue-start.log").read_text()
    deadline = time.monotonic() + wait_s
    while True:
        shown = sh("dvc", "queue", "status", cwd=root, env=env, check=False)
        status = shown.stdout
        # DVC's status can fail reading a task's record while that task writes it ("Expecting value"):
        # a failed look is looked at again, within the deadline.
        if shown.returncode == 0 and "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status + shown.stderr
        time.sleep(2)
    failed = [line.split()[0] for line in status.splitlines() if line.split()[-1:] == ["Failed"]]
    if failed:  # a task that failed before its stages ran has no log of its own, only its worker's
        logs = [sh("dvc", "queue", "logs", task, cwd=root, env=env, check=False) for task in failed]
        worker_logs = sorted((root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.out"))
        raise AssertionError(
            "\n".join(
                [
                    status,
                    *(log.stdout[-4000:] + log.stderr for log in logs),
                    *(w.read_text()[-6000:] for w in worker_logs),
                ]
            )
        )
    return status


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
