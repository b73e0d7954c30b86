"""The team tracking server: a real PostgreSQL cluster and a real `mlflow server` with basic-auth.

Servers start through `python -m mnist_pipeline.server` (what `make server` runs) or through
`make server` itself, each in a temporary state folder on a free port.
"""

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.server.config import ServerError
from mnist_pipeline.server.postgres import find_pg_bin

from support.team_server import (
    ADMIN,
    needs_postgres,
    new_password,
    process_alive,
    server_cli,
    server_env,
    state_folder,
)
from support.tools import REPO, free_port

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def http(
    url: str, method: str = "GET", user: str | None = None, password: str | None = None, body: dict | None = None
) -> int:
    """The status of one real HTTP request, with basic-auth credentials when given."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        url, method=method, headers=headers, data=None if body is None else json.dumps(body).encode()
    )
    try:
        with DIRECT.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def as_user(monkeypatch):
    """An MLflow client of a server as a user (or with no credentials at all)."""

    def client(url: str, user: str | None = None, password: str | None = None) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return MlflowClient(url)

    return client


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def postmaster_pid(state: Path) -> int:
    return int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])


# --- fast: refused before anything starts ---


@pytest.mark.slow
@pytest.mark.parametrize("password", [None, "", "eleven-char"])
def test_start_without_a_good_admin_password_says_what_to_set(password):
    state = state_folder()
    try:
        done = server_cli("start", env=server_env(state, free_port(), password), check=False)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: MLFLOW_AUTH_ADMIN_PASSWORD is ")
        assert "at least 12 characters (export MLFLOW_AUTH_ADMIN_PASSWORD=...)" in done.stderr
        assert not state.exists()
    finally:
        shutil.rmtree(state.parent)


@pytest.mark.slow
def test_start_on_a_busy_port_says_so():
    state = state_folder()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            done = server_cli("start", env=server_env(state, port, new_password()), check=False)
        finally:
            shutil.rmtree(state.parent)
    assert done.returncode == 1
    assert done.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; another server "
        f"(`make ui`?) may hold it: set MLFLOW_PORT to a free port\n"
    )


def test_missing_postgres_programs_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "15" / "bin").mkdir(parents=True)
    for program in ("initdb", "pg_ctl", "createdb"):  # no psql: an incomplete install
        (tmp_path / "15" / "bin" / program).touch()
    with pytest.raises(ServerError, match=r"are not installed: run `apt-get install postgresql`"):
        find_pg_bin(str(tmp_path / "*" / "bin"))
    (tmp_path / "15" / "bin" / "psql").touch()
    assert find_pg_bin(str(tmp_path / "*" / "bin")) == tmp_path / "15" / "bin"


def test_postgres_programs_on_path_lead_to_their_real_folder(tmp_path, monkeypatch):
    # As on Debian hosts that link only initdb and pg_ctl into /usr/local/bin.
    real = tmp_path / "lib" / "15" / "bin"
    real.mkdir(parents=True)
    for program in ("initdb", "pg_ctl", "psql", "createdb"):
        (real / program).touch(mode=0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pg_ctl").symlink_to(real / "pg_ctl")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_pg_bin(str(tmp_path / "none" / "*")) == real


# --- the shared server ---


@pytest.mark.slow
def test_health_is_open_but_the_api_needs_credentials(team_server):
    assert http(team_server.url + "/health") == 200
    assert http(team_server.url + SEARCH) == 401
    assert http(team_server.url + SEARCH, user=ADMIN, password="not-the-password") == 401
    assert http(team_server.url + SEARCH, user="nobody", password=team_server.admin_password) == 401
    assert http(team_server.url + SEARCH, user=ADMIN, password=team_server.admin_password) == 200


@pytest.mark.slow
def test_mlflow_clients_without_or_with_wrong_credentials_get_401(team_server, as_user):
    for client in (as_user(team_server.url), as_user(team_server.url, ADMIN, "not-the-password")):
        with pytest.raises(MlflowException, match="error code 401") as refused:
            client.search_experiments()
        assert refused.value.error_code == "UNAUTHENTICATED"
    assert as_user(team_server.url, ADMIN, team_server.admin_password).search_experiments()


@pytest.mark.slow
def test_a_user_granted_edit_logs_a_run_and_its_artifacts_go_through_the_server(team_server, as_user, tmp_path):
    password = team_server.add_user("alice", "EDIT", "shared-edit")
    client = as_user(team_server.url, "alice", password)
    experiment = client.get_experiment_by_name("shared-edit")
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment.experiment_id}"  # proxied
    run = client.create_run(experiment.experiment_id)
    client.log_metric(run.info.run_id, "test_accuracy", 0.9, step=1)
    (tmp_path / "note.txt").write_text("through the server\n")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)

    stored = team_server.state / "artifacts" / experiment.experiment_id / run.info.run_id / "artifacts" / "note.txt"
    assert stored.read_text() == "through the server\n"
    assert client.get_metric_history(run.info.run_id, "test_accuracy")[0].value == 0.9


@pytest.mark.slow
def test_a_user_with_read_only_is_refused_creating_a_run_until_granted_edit(team_server, as_user):
    password = team_server.add_user("bob", "READ", "shared-read")
    client = as_user(team_server.url, "bob", password)
    experiment = client.get_experiment_by_name("shared-read")  # reading is allowed
    create = {"experiment_id": experiment.experiment_id}
    url = team_server.url + "/api/2.0/mlflow/runs/create"

    assert http(url, "POST", "bob", password, create) == 403
    with pytest.raises(MlflowException, match="error code 403") as refused:
        client.create_run(experiment.experiment_id)
    assert refused.value.error_code == "PERMISSION_DENIED"

    done = team_server.cli("grant", "bob", "shared-read", "EDIT")  # replaces READ
    assert done.stdout == f"bob: EDIT on experiment shared-read (id {experiment.experiment_id})\n"
    assert http(url, "POST", "bob", password, create) == 200


@pytest.mark.slow
def test_admin_commands_explain_what_went_wrong(team_server):
    refused = team_server.cli("grant", ADMIN, "x", "READ", check=False, MLFLOW_AUTH_ADMIN_PASSWORD="wrong-password-123")
    assert refused.returncode == 1 and refused.stderr == (
        f"error: {team_server.url}: HTTP 401: the admin's credentials were refused: set "
        f"MLFLOW_AUTH_ADMIN_PASSWORD to the admin's password\n"
    )
    unknown = team_server.cli("grant", "nobody", "shared-errors", "READ", check=False)
    assert unknown.stderr == f"error: {team_server.url}: HTTP 404: User with username=nobody not found\n"
    found = f"{team_server.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=shared-errors"
    assert http(found, user=ADMIN, password=team_server.admin_password) == 404  # a typo creates nothing
    team_server.add_user("carol")
    wrong = team_server.cli("grant", "carol", "shared-errors", "WRITE", check=False)
    assert wrong.returncode == 1 and "HTTP 400: Invalid permission 'WRITE'. Valid permissions are:" in wrong.stderr
    short = team_server.cli("add-user", "dave", check=False, MLFLOW_NEW_USER_PASSWORD="short")
    assert short.stderr == "error: the password for dave is shorter than 12 characters\n"
    unasked = team_server.cli("add-user", "dave", check=False)  # no variable, no terminal to ask on
    assert unasked.stderr == (
        "error: no password for dave: set MLFLOW_NEW_USER_PASSWORD, or run this in a terminal to be asked\n"
    )
    down = team_server.cli(
        "add-user",
        "dave",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        check=False,
        MLFLOW_NEW_USER_PASSWORD=new_password(),
    )
    assert down.returncode == 1 and "Connection refused); start one with `make server`" in down.stderr


@pytest.mark.slow
def test_no_password_in_what_the_server_commands_print_or_write(team_server):
    team_server.add_user("erin", "EDIT", "shared-leaks")
    status = team_server.cli("status")
    assert f"mlflow server: running at {team_server.url}" in status.stdout
    log = (team_server.state / "mlflow.log").read_text()
    assert "Created admin user 'admin'" in log  # the server did receive the admin's password
    written = [team_server.state / name for name in ("basic_auth.ini", "server.json", "postgres/postgres.log")]
    texts = [*team_server.outputs, log, *(path.read_text() for path in written)]
    for password in [team_server.admin_password, *team_server.passwords]:
        assert not [text for text in texts if password in text]
    assert (team_server.state / "flask-secret-key").stat().st_mode & 0o777 == 0o600


# --- own servers: failures, and the Makefile for real ---


@pytest.mark.slow
@needs_postgres
def test_a_server_that_fails_to_start_points_at_its_log_and_leaves_nothing_running():
    state, port = state_folder(), free_port()
    # 12 characters, so it passes our check; MLflow refuses the password its old versions shipped.
    env = server_env(state, port, "password1234")
    try:
        done = server_cli("start", env=env, check=False)
        assert done.returncode == 1
        *tail, last = done.stderr.splitlines()
        assert last == f"error: mlflow server exited with code 1 while starting; see {state / 'mlflow.log'}"
        assert any("insecure default password" in line for line in tail)
        assert "postgres: stopped" in done.stdout  # it had started: the failure came after
        assert port_free(port) and not (state / "postgres" / "data" / "postmaster.pid").exists()
        status = server_cli("status", env=env, check=False)
        assert status.returncode == 1 and status.stdout.startswith("postgres: stopped")
    finally:
        server_cli("stop", env=env, check=False)
        shutil.rmtree(state.parent)


@pytest.mark.slow
@needs_postgres
def test_make_server_and_server_stop(as_user):
    state, port, password = state_folder(), free_port(), new_password()
    env = server_env(state, port, password)
    url = f"http://127.0.0.1:{port}"

    def make(target: str, **extra: str) -> subprocess.CompletedProcess:
        # -o: never rebuild the venv here, whatever the timestamps; it is the one running the tests.
        return subprocess.run(
            ["make", "-o", ".venv/.installed", target],
            cwd=REPO,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=600,
        )

    try:
        started = time.monotonic()
        done = make("server")
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        print(f"make server: ready after {seconds:.1f} s")
        assert f"mlflow server: ready at {url} after" in done.stdout
        assert http(url + "/health") == 200 and http(url + SEARCH) == 401
        assert http(url + SEARCH, user=ADMIN, password=password) == 200
        as_user(url, ADMIN, password).create_experiment("kept")

        again = make("server")
        assert again.returncode == 0 and f"mlflow server: already running at {url}" in again.stdout

        server_pid = json.loads((state / "server.json").read_text())["pid"]
        pg_pid = postmaster_pid(state)
        stopped = make("server-stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"mlflow server: stopped (pid {server_pid})\npostgres: stopped\n" in stopped.stdout
        assert not process_alive(server_pid) and not process_alive(pg_pid)
        assert port_free(port) and not (state / "postgres" / ".s.PGSQL.5432").exists()

        # A restart keeps the data; the admin password is the one from the first start.
        restarted = make("server", MLFLOW_AUTH_ADMIN_PASSWORD=new_password())
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "postgres: created a cluster" not in restarted.stdout
        assert "warning: MLFLOW_AUTH_ADMIN_PASSWORD is not the admin's password on this server" in restarted.stderr
        assert as_user(url, ADMIN, password).get_experiment_by_name("kept")
    finally:
        final = make("server-stop")
        shutil.rmtree(state.parent)
    assert final.returncode == 0 and "mlflow server: stopped" in final.stdout
