"""Start, stop and report the team server: the PostgreSQL cluster, then the `mlflow server` process."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mnist_pipeline.files import atomic_path
from mnist_pipeline.server import studies
from mnist_pipeline.server.admin import ADMIN_PASSWORD, ApiError, admin_password, api
from mnist_pipeline.server.config import (
    EVERY_INTERFACE,
    PG_PORT,
    ServerError,
    ServerPaths,
    address,
    local_url,
    server_paths,
    url_host,
)
from mnist_pipeline.server.postgres import Postgres
from mnist_pipeline.tracking.rest import Unreachable, health

START_TIMEOUT_S = 180  # `mlflow server` took 12 to 76 s to answer on 2 busy cores
STOP_TIMEOUT_S = 30


def start() -> None:
    admin_password()  # before anything is created
    host, port = address()
    access = studies.studies_access()
    if access and access.port == port:
        raise ServerError(f"{studies.PORT} and MLFLOW_PORT are both {port}: give the studies database another port")
    paths = server_paths()
    running = _running_server(paths)
    if running:
        print(
            f"mlflow server: already running at {local_url(running['host'], running['port'])} "
            f"(pid {running['pid']}); `make server-stop` stops it"
        )
        _print_studies(Postgres.find(paths).listening())
        if access:
            print(
                "  it keeps the studies database as it was started: `make server-stop`, then `make server`, "
                f"applies {studies.HOST}, {studies.PORT} and {studies.PASSWORD}"
            )
        return
    _check_port_free(host, port, "MLFLOW_PORT", " (`make ui`?)")
    pg = Postgres.find(paths)
    if access and pg.listening() != (access.host, access.port):
        _check_port_free(access.host, access.port, studies.PORT, "")
    started = time.monotonic()
    pg.prepare(access.port if access else PG_PORT)
    paths.artifacts.mkdir(mode=0o700, exist_ok=True)
    pg.start(access)
    if access:
        _print_studies(pg.listening())
    server = _launch_mlflow(paths, host, port, access.port if access else PG_PORT)
    url = local_url(host, port)
    print(f"mlflow server: starting on {url_host(host)}:{port}, log in {paths.log}", flush=True)
    try:
        _wait_healthy(server, url, paths.log)
    except (ServerError, KeyboardInterrupt):
        stop()  # leave nothing half-started behind
        raise
    print(f"mlflow server: ready at {url} after {time.monotonic() - started:.1f} s")
    _warn_if_admin_password_differs(url)
    if host in EVERY_INTERFACE:
        print(
            f"  on every interface: other machines use http://{socket.gethostname()}:{port} (by default MLflow "
            f"answers only loopback and private addresses: list other names in MLFLOW_SERVER_ALLOWED_HOSTS)"
        )
    print(
        f"Clients: export MLFLOW_TRACKING_URI={url} MLFLOW_TRACKING_USERNAME=NAME MLFLOW_TRACKING_PASSWORD=...\n"
        f"Users: python -m mnist_pipeline.server add-user NAME, then grant NAME mnist-mlp EDIT --model mnist-mlp"
    )


def stop() -> None:
    """Stop `mlflow server`, then PostgreSQL; say which was not running."""
    paths = server_paths()
    running = _running_server(paths)
    if running:
        _terminate_group(running["pid"])
        print(f"mlflow server: stopped (pid {running['pid']})")
    else:
        print("mlflow server: not running")
    paths.server.unlink(missing_ok=True)
    if paths.has_cluster() and (pg := Postgres.find(paths)).running():
        pg.stop()
        print("postgres: stopped")
    else:
        print("postgres: not running")


def status() -> bool:
    """Print what runs; True when the tracking server answers /health."""
    paths = server_paths()
    listening = Postgres.find(paths).listening() if paths.has_cluster() else None  # None: not running
    print(f"postgres: {'running' if listening else 'stopped'} ({paths.pg})")
    _print_studies(listening)
    running = _running_server(paths)
    if not running:
        print("mlflow server: stopped")
        return False
    url = local_url(running["host"], running["port"])
    healthy = _healthy(url)
    print(f"mlflow server: {'running' if healthy else 'not answering'} at {url} (pid {running['pid']})")
    return healthy


def _print_studies(listening: tuple[str, int] | None) -> None:
    """Whether the cluster listens on TCP, which it does only for the studies database."""
    if not listening or not listening[0]:
        print(f"studies database: closed ({studies.HOST} opens it to other hosts)")
        return
    print(
        f"studies database: open on {url_host(listening[0])}:{listening[1]} to role {studies.NAME}, by password\n"
        f"  Workers: export PGPASSWORD (the {studies.PASSWORD}) and use {studies.worker_url(*listening)}",
        flush=True,
    )


def _check_port_free(host: str, port: int, variable: str, hint: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and PostgreSQL bind
        try:
            probe.bind(("" if host == "*" else host, port))
        except OSError as exc:
            raise ServerError(
                f"cannot listen on {host}:{port}: {exc.strerror}; another server{hint} "
                f"may hold it: set {variable} to a free port"
            ) from None


def _launch_mlflow(paths: ServerPaths, host: str, port: int, pg_port: int) -> subprocess.Popen:
    paths.auth_config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"  # MLflow's default: teammates see all, write where granted
        f"database_uri = {paths.db_uri('mlflow_auth', pg_port)}\n"
        "admin_username = admin\n"  # MLFLOW_AUTH_ADMIN_USERNAME overrides it (MLflow reads it)
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request's password check costs 0.12 s of scrypt here, and a run sends hundreds:
        # remember a good one for a minute. With one worker a password change or a removed user
        # takes effect at once (MLflow drops the entry); with several, within the minute.
        "auth_cache_ttl_seconds = 60\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(paths.auth_config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key(paths),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop(studies.PASSWORD, None)  # PostgreSQL's business, not MLflow's
    # MLflow's own settings, with defaults that start in about half the time: one worker (4 by
    # default) serves a small team, and this project queues no server-side jobs.
    env.setdefault("MLFLOW_WORKERS", "1")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if env.get("MLFLOW_SERVER_ALLOWED_HOSTS", "*") != "*":
        # A list of public names would shut out this machine's own admin commands; a loopback Host
        # header is no DNS-rebinding risk (MLflow's default list has it too).
        local = local_url(host, port).removeprefix("http://")
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] += f",127.0.0.1:{port},localhost:{port},{local}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        paths.db_uri("mlflow", pg_port),
        "--serve-artifacts",
        "--artifacts-destination",
        str(paths.artifacts),
        "--host",
        host,
        "--port",
        str(port),
    ]
    log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:  # its own session: it outlives this command, and stop() signals its whole group
        server = subprocess.Popen(
            command,
            cwd=paths.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(log)
    paths.server.write_text(json.dumps({"pid": server.pid, "host": host, "port": port}) + "\n")
    return server


def secret_key(paths: ServerPaths) -> str:
    """Flask's key for basic-auth's CSRF tokens: made once, kept readable by this user only."""
    try:
        key = paths.secret_key.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:  # missing, or left empty by an older version that crashed while writing it
        key = secrets.token_urlsafe(32)
        with atomic_path(paths.secret_key, mode=0o600) as tmp:
            tmp.write_text(key + "\n")
    return key


def _wait_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    started = time.monotonic()
    next_note = 10.0
    while (waited := time.monotonic() - started) < START_TIMEOUT_S:
        if server.poll() is not None:
            _print_tail(log)
            raise ServerError(f"mlflow server exited with code {server.returncode} while starting; see {log}")
        if _healthy(url):
            return
        if waited >= next_note:
            print(f"  waiting for {url}/health ({waited:.0f} s)", flush=True)
            next_note += 10
        time.sleep(0.25)
    _print_tail(log)
    raise ServerError(f"mlflow server did not answer {url}/health within {START_TIMEOUT_S} s; see {log}")


def _healthy(url: str) -> bool:
    try:
        return health(url, timeout=2, direct=True) == 200  # our own machine: never through a proxy
    except Unreachable:
        return False


def _print_tail(log: Path, lines: int = 15) -> None:
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    for line in tail:
        print(f"  | {line}", file=sys.stderr)


def _warn_if_admin_password_differs(url: str) -> None:
    # MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin, on the first start.
    try:
        api(url, "GET", "/api/2.0/mlflow/users/current")
    except ApiError as exc:
        if exc.code == 401:
            print(
                f"warning: {ADMIN_PASSWORD} is not the admin's password on this server: MLflow reads it "
                f"only on the first start; use the password set then",
                file=sys.stderr,
            )


def _running_server(paths: ServerPaths) -> dict | None:
    """The server.json record, if its process is still our `mlflow server` (not a reused pid)."""
    try:
        record = json.loads(paths.server.read_text())
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return dict(record) if b"mlflow" in b" ".join(cmdline) and b"server" in cmdline else None


def _terminate_group(pgid: int) -> None:
    """SIGTERM the server's process group (it runs uvicorn as a child); SIGKILL what outlives it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.2)
    raise ServerError(f"mlflow server (process group {pgid}) did not stop")


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still alive; zombies wait only for their parent to reap them."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # fields after the command name: state, ppid, pgrp, ...
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        if int(group) == pgid and state != "Z":
            return True
    return False
