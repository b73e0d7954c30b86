"""The studies database `make server` opens to other hosts: a real PostgreSQL cluster, its role `studies`
reached over TCP by password, and that password kept out of every file, command line and output."""

import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from support.team_server import needs_postgres, new_password, server_cli, server_env, state_folder
from support.tools import free_port

pytestmark = [pytest.mark.slow, needs_postgres]

# `python -m mnist_pipeline.server`, noting every command line it starts (Python's audit event) in a file.
AUDITED = """
import runpy, sys
log = open(sys.argv.pop(1), "a")
def note(event, args):
    if event == "subprocess.Popen":
        print(*args[1], file=log, flush=True)
sys.addaudithook(note)
runpy.run_module("mnist_pipeline.server", run_name="__main__", alter_sys=True)
"""


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = ipv6_loopback()


@dataclass
class StudiesServer:
    state: Path
    env: dict[str, str]  # `python -m mnist_pipeline.server` for this server, without STUDIES_PASSWORD
    url: str  # the MLflow server's
    port: int  # the studies database's
    commands: Path  # every command line `start` ran, one a line
    password: str = ""
    passwords: list[str] = field(default_factory=list)  # every one set, for leak checks
    outputs: list[str] = field(default_factory=list)

    def start(self, password: str) -> subprocess.CompletedProcess:
        self.password = password
        self.passwords.append(password)
        done = subprocess.run(
            [sys.executable, "-c", AUDITED, str(self.commands), "start"],
            env={**self.env, "STUDIES_PASSWORD": password},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        self.outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def connect(
        self, password: str | None = None, database: str = "studies", user: str = "studies", host: str = "127.0.0.1"
    ):
        return contextlib.closing(
            psycopg2.connect(
                host=host,
                port=self.port,
                user=user,
                password=self.password if password is None else password,
                dbname=database,
                connect_timeout=10,
            )
        )


@pytest.fixture(scope="module")
def studies_server() -> Iterator[StudiesServer]:
    state, port, db_port = state_folder(), free_port(), free_port()
    host = "::1" if IPV6 else "127.0.0.1"
    env = {
        **server_env(state, port, new_password()),
        "MLFLOW_HOST": host,
        "STUDIES_HOST": "127.0.0.1",
        "STUDIES_PORT": str(db_port),
    }
    server = StudiesServer(
        state, env, f"http://{'[::1]' if IPV6 else host}:{port}", db_port, state.parent / "commands.txt"
    )
    try:
        server.start(new_password())
        yield server
    finally:
        server_cli("stop", env=env, check=False)
        shutil.rmtree(state.parent, ignore_errors=True)


def tcp_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on: its sockets' inodes, looked up in the kernel's tables."""
    inodes = {
        link.readlink().name[8:-1]
        for link in Path(f"/proc/{pid}/fd").iterdir()
        if link.readlink().name.startswith("socket:[")
    }
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def postmaster(state: Path) -> int:
    return int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])


def workers_lines(port: int) -> str:
    return (
        f"studies database: open on 127.0.0.1:{port} to role studies, by password\n"
        f"  Workers: export PGPASSWORD (the STUDIES_PASSWORD) and use "
        f"postgresql+psycopg2://studies@127.0.0.1:{port}/studies\n"
    )


def test_start_and_status_say_where_workers_connect(studies_server):
    assert workers_lines(studies_server.port) in studies_server.outputs[0]
    status = server_cli("status", env=studies_server.env)
    assert status.stdout.startswith(
        f"postgres: running ({studies_server.state / 'postgres'})\n" + workers_lines(studies_server.port)
    )


def test_the_role_connects_over_tcp_with_its_password_and_owns_only_its_database(studies_server):
    assert tcp_ports(postmaster(studies_server.state)) == {studies_server.port}
    with studies_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == ("studies", "studies")
        cur.execute("CREATE TABLE probe (n int); INSERT INTO probe VALUES (1); SELECT n FROM probe")  # Optuna's job
        assert cur.fetchone() == (1,)
        cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False, False)
        cur.execute(
            "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        )
        assert cur.fetchall() == [("studies",)]
        conn.rollback()


def test_a_wrong_password_is_refused(studies_server):
    with pytest.raises(psycopg2.OperationalError, match='password authentication failed for user "studies"'):
        studies_server.connect("not-the-password")


@pytest.mark.parametrize("database", ["mlflow", "mlflow_auth", "postgres"])
def test_the_role_reaches_no_other_database(studies_server, database):
    with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects connection"):
        studies_server.connect(database=database)  # over TCP
    with pytest.raises(psycopg2.OperationalError, match=f'permission denied for database "{database}"'):
        studies_server.connect(database=database, host=str(studies_server.state / "postgres"))  # the socket


def test_the_superuser_is_refused_over_tcp(studies_server):
    with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects connection"):
        studies_server.connect(user="postgres", database="postgres")


def test_a_restart_with_another_password_replaces_it(studies_server):
    old = studies_server.password
    server_cli("stop", env=studies_server.env)
    studies_server.start(new_password())
    with studies_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == ("studies",)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        studies_server.connect(old)


def test_the_password_is_in_no_file_command_line_environment_or_output(studies_server):
    secrets = [password.encode() for password in studies_server.passwords]
    files = [path for path in studies_server.state.rglob("*") if path.is_file()]
    assert len(files) > 100  # the cluster's own files among them, read as bytes
    assert [path for path in files if any(secret in path.read_bytes() for secret in secrets)] == []
    commands = studies_server.commands.read_text()
    assert all(program in commands for program in ("/initdb ", "/pg_ctl ", "/psql ", " -m mlflow server "))
    assert not [secret for secret in secrets if secret in commands.encode()]
    seen: dict[str, bytes] = {}  # every process's command line and environment
    for process in Path("/proc").iterdir():
        for name in ("cmdline", "environ") if process.name.isdigit() else ():
            with contextlib.suppress(OSError):  # exited meanwhile
                seen[f"{process}/{name}"] = (process / name).read_bytes()
    assert any(str(studies_server.state).encode() in text for text in seen.values())  # the cluster's and MLflow's
    # Names, not contents, in a failure: an environment holds other people's secrets.
    assert [name for name, text in seen.items() if any(secret in text for secret in secrets)] == []
    passwords = studies_server.passwords
    assert [i for i, text in enumerate(studies_server.outputs) if any(password in text for password in passwords)] == []


@pytest.mark.skipif(not IPV6, reason="no IPv6 loopback here")
def test_mlflow_on_ipv6_loopback_gives_a_url_its_clients_take(studies_server, monkeypatch):
    assert f"MLFLOW_TRACKING_URI={studies_server.url} " in studies_server.outputs[0]  # http://[::1]:PORT
    env = {**studies_server.env, "MLFLOW_NEW_USER_PASSWORD": new_password()}  # MLFLOW_HOST=::1, no --url
    assert server_cli("add-user", "ivy", env=env).stdout.startswith("created user ivy")
    granted = server_cli("grant", "ivy", "on-ipv6", "EDIT", env=env)
    assert granted.stdout.startswith("created experiment on-ipv6 (id ")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ivy")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_NEW_USER_PASSWORD"])
    experiment = MlflowClient(studies_server.url).get_experiment_by_name("on-ipv6")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_nothing_listens_on_tcp_by_default(team_server):
    assert tcp_ports(postmaster(team_server.state)) == set()
    status = team_server.cli("status")
    assert "\nstudies database: closed (STUDIES_HOST opens it to other hosts)\n" in status.stdout
