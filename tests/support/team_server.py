"""A real team tracking server for tests: a private PostgreSQL cluster and `mlflow server` with
basic-auth, started by `python -m mnist_pipeline.server`, the command `make server` runs.

Each server gets its own state folder and a free port; the cluster listens on a socket inside that
folder only, so it never meets the system's PostgreSQL service. `team_server` is one such server
shared by the session (conftest.py registers this module's fixtures for every test file).
"""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mnist_pipeline.server.config import ServerError
from mnist_pipeline.server.postgres import find_pg_bin

from support.tools import REPO, free_port

ADMIN = "admin"

try:
    find_pg_bin()
    POSTGRES_MISSING = ""
except ServerError as exc:
    POSTGRES_MISSING = str(exc)
needs_postgres = pytest.mark.skipif(bool(POSTGRES_MISSING), reason=POSTGRES_MISSING)


def new_password() -> str:
    return "pw-" + secrets.token_hex(10)


def state_folder() -> Path:
    """A temporary folder for a server's state; remove it with shutil.rmtree.

    Not pytest's tmp_path: when tests run as root, PostgreSQL runs as the `postgres` user, which
    cannot pass through /tmp/pytest-of-root (mode 0700).
    """
    folder = Path(tempfile.mkdtemp(prefix="mlflow-team-"))
    folder.chmod(0o711)
    return folder / "state"


def server_env(state: Path, port: int, admin_password: str | None) -> dict[str, str]:
    """The environment `make server` would see: this checkout's package, this venv's tools, no
    tracking or auth settings of the developer running the tests."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_", "MLFLOW_SERVER_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(REPO / "src"),
        MLFLOW_SERVER_DIR=str(state),
        MLFLOW_PORT=str(port),
        MLFLOW_HOST="127.0.0.1",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    env.pop("MLFLOW_WORKERS", None)  # the module's own default, as `make server` has it
    if admin_password is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password
    return env


def server_cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.server", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"server {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (here the init process may leave the exited server unreaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class TeamServer:
    url: str
    port: int
    state: Path
    admin_password: str
    env: dict[str, str]  # runs `python -m mnist_pipeline.server` against this server
    start_seconds: float
    passwords: list[str] = field(default_factory=list)  # every one handed out, for leak checks
    outputs: list[str] = field(default_factory=list)  # everything the CLI printed

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        done = server_cli(*args, env={**self.env, **env}, check=check)
        self.outputs += [done.stdout, done.stderr]
        return done

    def add_user(
        self, name: str, permission: str | None = None, experiment: str = "mnist-mlp", model: str | None = None
    ) -> str:
        """Create a user through the CLI, as an admin would, with `permission` on the experiment
        (and the registered model); return the user's password."""
        password = new_password()
        self.passwords.append(password)
        self.cli("add-user", name, MLFLOW_NEW_USER_PASSWORD=password)
        if permission:
            self.cli("grant", name, experiment, permission, *(["--model", model] if model else []))
        return password

    def client_env(self, user: str, password: str) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


@contextlib.contextmanager
def running_team_server() -> Iterator[TeamServer]:
    state = state_folder()
    port, password = free_port(), new_password()
    env = server_env(state, port, password)
    try:
        started = time.monotonic()
        done = server_cli("start", env=env)
        server = TeamServer(f"http://127.0.0.1:{port}", port, state, password, env, time.monotonic() - started)
        server.outputs += [done.stdout, done.stderr]
        yield server
    finally:
        server_cli("stop", env=env, check=False)
        shutil.rmtree(state.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def team_server() -> Iterator[TeamServer]:
    if POSTGRES_MISSING:
        pytest.skip(POSTGRES_MISSING)
    with running_team_server() as server:
        yield server
