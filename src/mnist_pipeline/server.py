"""A team MLflow tracking server: PostgreSQL + `mlflow server` with basic-auth and proxied artifacts.

    python -m mnist_pipeline.server start | stop | status
    python -m mnist_pipeline.server add-user NAME
    python -m mnist_pipeline.server grant NAME EXPERIMENT PERMISSION [--model NAME]

Everything lives in one folder (MLFLOW_SERVER_DIR, default `.mlflow-server/`): the PostgreSQL
cluster and its socket, the artifacts, the logs, the Flask secret key. MLflow is driven as a
separate program and over its REST API, so this module does not import it.
"""

import argparse
import base64
import getpass
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.errors import PipelineError, brief

ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own variable: it creates the admin from it
NEW_USER_PASSWORD = "MLFLOW_NEW_USER_PASSWORD"
MIN_PASSWORD = 12  # MLflow's rule (mlflow.utils.validation._validate_password); checked early here
DATABASES = ("mlflow", "mlflow_auth")  # runs and models; basic-auth's users and permissions
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian keeps the server programs off PATH
PG_PROGRAMS = ("initdb", "pg_ctl", "psql", "createdb")
PG_PORT = 5432  # only names the socket file: the cluster listens on no TCP port
SOCKET_PATH_MAX = 107  # bytes in a Unix socket path on Linux
START_TIMEOUT_S = 180  # `mlflow server` took 12 to 76 s to answer on 2 busy cores
STOP_TIMEOUT_S = 30
# Marks a model-training experiment, as mnist_pipeline.tracking does when it creates one.
EXPERIMENT_TAGS = [{"key": "mlflow.experimentKind", "value": "custom_model_development"}]


class ServerError(PipelineError):
    """A problem the user can fix; printed alone as `error: ...`."""


class ApiError(ServerError):
    """The MLflow server answered a request with an HTTP error."""

    def __init__(self, message: str, code: int, error_code: str = ""):
        super().__init__(message)
        self.code = code
        self.error_code = error_code  # MLflow's name for it, e.g. RESOURCE_ALREADY_EXISTS


class State:
    """The paths inside the state folder."""

    def __init__(self, root: Path):
        self.root = root
        self.pg = root / "postgres"  # owned by the user PostgreSQL runs as, mode 0700; holds its socket
        self.data = self.pg / "data"
        self.pg_log = self.pg / "postgres.log"
        self.artifacts = root / "artifacts"
        self.log = root / "mlflow.log"
        self.server = root / "server.json"  # pid, host and port of the running `mlflow server`
        self.secret_key = root / "flask-secret-key"
        self.auth_config = root / "basic_auth.ini"

    def has_cluster(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def db_uri(self, database: str) -> str:
        # No password anywhere: the socket's folder is the access control (see _create_cluster).
        host = urllib.parse.quote(str(self.pg), safe="/")
        return f"postgresql+psycopg2://postgres@/{database}?host={host}&port={PG_PORT}"


def state() -> State:
    return State(Path(os.environ.get("MLFLOW_SERVER_DIR") or ".mlflow-server").resolve())


def address() -> tuple[str, int]:
    """MLFLOW_HOST (default 127.0.0.1: this machine only) and MLFLOW_PORT (default 5000)."""
    host = os.environ.get("MLFLOW_HOST") or "127.0.0.1"
    port = os.environ.get("MLFLOW_PORT") or "5000"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ServerError(f"MLFLOW_PORT = {port!r}: expected a port number (1-65535)")
    return host, int(port)


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a server bound to `host`."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


# --- start / stop / status ---

def start() -> None:
    admin_password()  # before anything is created
    host, port = address()
    st = state()
    running = _running_server(st)
    if running:
        print(f"mlflow server: already running at {local_url(running['host'], running['port'])} "
              f"(pid {running['pid']}); `make server-stop` stops it")
        return
    _check_port_free(host, port)
    started = time.monotonic()
    pg = Postgres.find(st)
    _prepare(st)
    pg.start()
    server = _launch_mlflow(st, host, port)
    url = local_url(host, port)
    print(f"mlflow server: starting on {host}:{port}, log in {st.log}", flush=True)
    try:
        _wait_healthy(server, url, st.log)
    except (ServerError, KeyboardInterrupt):
        stop()  # leave nothing half-started behind
        raise
    print(f"mlflow server: ready at {url} after {time.monotonic() - started:.1f} s")
    _warn_if_admin_password_differs(url)
    if host in ("0.0.0.0", "::"):
        print(f"  on every interface: other machines use http://{socket.gethostname()}:{port} (by default MLflow "
              f"answers only loopback and private addresses: list other names in MLFLOW_SERVER_ALLOWED_HOSTS)")
    print(f"Clients: export MLFLOW_TRACKING_URI={url} MLFLOW_TRACKING_USERNAME=NAME MLFLOW_TRACKING_PASSWORD=...\n"
          f"Users: python -m mnist_pipeline.server add-user NAME, then grant NAME mnist-mlp EDIT --model mnist-mlp")


def stop() -> None:
    """Stop `mlflow server`, then PostgreSQL; say which was not running."""
    st = state()
    running = _running_server(st)
    if running:
        _terminate_group(running["pid"])
        print(f"mlflow server: stopped (pid {running['pid']})")
    else:
        print("mlflow server: not running")
    st.server.unlink(missing_ok=True)
    if st.has_cluster() and (pg := Postgres.find(st)).running():
        pg.stop()
        print("postgres: stopped")
    else:
        print("postgres: not running")


def status() -> bool:
    """Print what runs; True when the tracking server answers /health."""
    st = state()
    pg_up = st.has_cluster() and Postgres.find(st).running()
    print(f"postgres: {'running' if pg_up else 'stopped'} ({st.pg})")
    running = _running_server(st)
    if not running:
        print("mlflow server: stopped")
        return False
    url = local_url(running["host"], running["port"])
    healthy = _healthy(url)
    print(f"mlflow server: {'running' if healthy else 'not answering'} at {url} (pid {running['pid']})")
    return healthy


def admin_password() -> str:
    password = os.environ.get(ADMIN_PASSWORD, "")
    if len(password) < MIN_PASSWORD:
        problem = "is not set" if not password else f"is shorter than {MIN_PASSWORD} characters"
        raise ServerError(f"{ADMIN_PASSWORD} {problem}: set it to the admin's password, at least "
                          f"{MIN_PASSWORD} characters (export {ADMIN_PASSWORD}=...)")
    return password


@dataclass(frozen=True)
class Postgres:
    """Debian's PostgreSQL server programs, run on the cluster in the state folder."""

    bin: Path
    owner: pwd.struct_passwd | None  # the user to run them as; None: this process's user
    st: State

    @classmethod
    def find(cls, st: State, pattern: str = PG_BIN_GLOB) -> "Postgres":
        return cls(find_pg_bin(pattern), _pg_owner(), st)

    def running(self) -> bool:
        # pg_ctl status: 0 running, 3 not running.
        return self._run("pg_ctl", "status", "-D", str(self.st.data), check=False).returncode == 0

    def start(self) -> None:
        if not self.st.has_cluster():
            self._create_cluster()
        if not self.running():
            self._run("pg_ctl", "start", "-w", "-t", "60", "-s", "-D", str(self.st.data), "-l", str(self.st.pg_log),
                      failure=f"PostgreSQL did not start; see {self.st.pg_log}")
        self._create_databases()
        print(f"postgres: running, socket in {self.st.pg}", flush=True)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-s", "-m", "fast", "-D", str(self.st.data),
                  failure=f"PostgreSQL did not stop; see {self.st.pg_log}")

    def _create_cluster(self) -> None:
        shutil.rmtree(self.st.data, ignore_errors=True)  # what an interrupted initdb left, if anything
        # `trust` is safe here because the cluster listens on no TCP port and its socket sits in a
        # folder only its owner (and root) can enter: whoever reaches it owns the files anyway.
        self._run("initdb", "-D", str(self.st.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", failure="initdb could not create the PostgreSQL cluster")
        folder = str(self.st.pg).replace("'", "''")
        with open(self.st.data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# mnist_pipeline.server: a private cluster, reached only through this socket\n"
                       f"listen_addresses = ''\nunix_socket_directories = '{folder}'\nport = {PG_PORT}\n")
        print(f"postgres: created a cluster in {self.st.data}", flush=True)

    def _create_databases(self) -> None:
        client = ("-h", str(self.st.pg), "-p", str(PG_PORT), "-U", "postgres")
        listed = self._run("psql", *client, "-X", "-At", "-d", "postgres", "-c", "SELECT datname FROM pg_database",
                           as_owner=False, failure="cannot list PostgreSQL's databases").stdout.split()
        for name in DATABASES:
            if name not in listed:
                self._run("createdb", *client, name, as_owner=False, failure=f"cannot create database {name}")

    def _run(self, program: str, *args: str, as_owner: bool = True, check: bool = True,
             failure: str = "") -> subprocess.CompletedProcess:
        owner = self.owner if as_owner else None
        done = subprocess.run(
            [str(self.bin / program), *args], capture_output=True, text=True, cwd=self.st.pg,
            user=owner.pw_uid if owner else None, group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None)
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise ServerError(f"{failure or program + ' failed'}: {said[-1] if said else f'exit {done.returncode}'}")
        return done


def find_pg_bin(pattern: str = PG_BIN_GLOB) -> Path:
    """The folder of PostgreSQL's programs: pg_ctl's on PATH, else Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    # A symlink on PATH leads to the real folder, where the client programs sit beside it.
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted((Path(p) for p in glob.glob(pattern)), reverse=True,
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    for folder in candidates:
        if all((folder / program).exists() for program in PG_PROGRAMS):
            return folder
    raise ServerError(f"PostgreSQL's programs ({', '.join(PG_PROGRAMS)}) are not installed: "
                      "run `apt-get install postgresql`, or put them on PATH")


def _pg_owner() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:  # PostgreSQL refuses to run as root: Debian's package made this user for it
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("PostgreSQL refuses to run as root and there is no `postgres` user: "
                          "run `apt-get install postgresql`, or start the server as another user") from None


def _prepare(st: State) -> None:
    """Create the state folder: private files, and a cluster folder owned by PostgreSQL's user."""
    socket_path = st.pg / f".s.PGSQL.{PG_PORT}"
    if len(str(socket_path).encode()) > SOCKET_PATH_MAX:
        raise ServerError(f"{st.root} is too deep for PostgreSQL's socket ({socket_path} is over "
                          f"{SOCKET_PATH_MAX} bytes): set MLFLOW_SERVER_DIR to a shorter path")
    st.root.mkdir(parents=True, exist_ok=True)
    st.root.chmod(0o711)  # PostgreSQL's user (when we are root) must pass through to its folder
    st.pg.mkdir(mode=0o700, exist_ok=True)
    owner = _pg_owner()
    if owner:
        os.chown(st.pg, owner.pw_uid, owner.pw_gid)
    st.artifacts.mkdir(mode=0o700, exist_ok=True)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror}; another server (`make ui`?) "
                              f"may hold it: set MLFLOW_PORT to a free port") from None


def _launch_mlflow(st: State, host: str, port: int) -> subprocess.Popen:
    st.auth_config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"  # MLflow's default: teammates see all, write where granted
        f"database_uri = {st.db_uri('mlflow_auth')}\n"
        "admin_username = admin\n"  # MLFLOW_AUTH_ADMIN_USERNAME overrides it (MLflow reads it)
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request's password check costs 0.12 s of scrypt here, and a run sends hundreds:
        # remember a good one for a minute. With one worker a password change or a removed user
        # takes effect at once (MLflow drops the entry); with several, within the minute.
        "auth_cache_ttl_seconds = 60\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(st.auth_config),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret_key(st), "MLFLOW_DISABLE_TELEMETRY": "true"}
    # MLflow's own settings, with defaults that start in about half the time: one worker (4 by
    # default) serves a small team, and this project queues no server-side jobs.
    env.setdefault("MLFLOW_WORKERS", "1")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if env.get("MLFLOW_SERVER_ALLOWED_HOSTS", "*") != "*":
        # A list of public names would shut out this machine's own admin commands; a loopback Host
        # header is no DNS-rebinding risk (MLflow's default list has it too).
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] += f",127.0.0.1:{port},localhost:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
               "--backend-store-uri", st.db_uri("mlflow"),
               "--serve-artifacts", "--artifacts-destination", str(st.artifacts),
               "--host", host, "--port", str(port)]
    log = os.open(st.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:  # its own session: it outlives this command, and stop() signals its whole group
        server = subprocess.Popen(command, cwd=st.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        os.close(log)
    st.server.write_text(json.dumps({"pid": server.pid, "host": host, "port": port}) + "\n")
    return server


def _secret_key(st: State) -> str:
    """Flask's key for basic-auth's CSRF tokens: made once, kept readable by this user only."""
    try:
        fd = os.open(st.secret_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return st.secret_key.read_text().strip()
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
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
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own machine: never a proxy
    try:
        with direct.open(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
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
            print(f"warning: {ADMIN_PASSWORD} is not the admin's password on this server: MLflow reads it "
                  f"only on the first start; use the password set then", file=sys.stderr)


def _running_server(st: State) -> dict | None:
    """The server.json record, if its process is still our `mlflow server` (not a reused pid)."""
    try:
        record = json.loads(st.server.read_text())
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return record if b"mlflow" in b" ".join(cmdline) and b"server" in cmdline else None


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
            state_, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        if int(group) == pgid and state_ != "Z":
            return True
    return False


# --- users and permissions, through the server's REST API as the admin ---

def api(url: str, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
    """One request to the server as its admin (MLFLOW_AUTH_ADMIN_USERNAME, default admin)."""
    user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    token = base64.b64encode(f"{user}:{admin_password()}".encode()).decode()
    request = urllib.request.Request(
        url.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else ""), method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        said, error_code = exc.read().decode(errors="replace"), ""
        try:
            answer = json.loads(said)
            said, error_code = answer.get("message", said), answer.get("error_code", "")
        except (ValueError, AttributeError):
            pass  # not MLflow's JSON: keep the text
        if exc.code == 401:
            said = f"the admin's credentials were refused: set {ADMIN_PASSWORD} to the admin's password"
        raise ApiError(f"{url}: HTTP {exc.code}: {brief(said)}", exc.code, error_code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"no MLflow server answers at {url} ({getattr(exc, 'reason', exc)}); "
                          f"start one with `make server`") from None


def add_user(url: str, name: str) -> None:
    password = _new_password(name)
    api(url, "POST", "/api/2.0/mlflow/users/create", {"username": name, "password": password})
    print(f"created user {name}; give them access with: python -m mnist_pipeline.server grant {name} EXPERIMENT EDIT")


def grant(url: str, name: str, experiment: str, permission: str, model: str | None) -> None:
    """Give a user a permission on an experiment (and a registered model), creating them if missing."""
    permission = permission.upper()
    api(url, "GET", "/api/2.0/mlflow/users/get", query={"username": name})  # a typo fails before creating anything
    try:
        found = api(url, "GET", "/api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": experiment})
        experiment_id = found["experiment"]["experiment_id"]
    except ApiError as exc:
        if exc.code != 404:
            raise
        experiment_id = api(url, "POST", "/api/2.0/mlflow/experiments/create",
                            {"name": experiment, "tags": EXPERIMENT_TAGS})["experiment_id"]
        print(f"created experiment {experiment} (id {experiment_id})")
    _grant(url, name, "experiment", experiment_id, permission)
    print(f"{name}: {permission} on experiment {experiment} (id {experiment_id})")
    if model:
        try:
            api(url, "GET", "/api/2.0/mlflow/registered-models/get", query={"name": model})
        except ApiError as exc:
            if exc.code != 404:
                raise
            api(url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": model})
            print(f"created registered model {model}")
        _grant(url, name, "registered_model", model, permission)
        print(f"{name}: {permission} on registered model {model}")


def _grant(url: str, name: str, resource_type: str, resource_id: str, permission: str) -> None:
    resource = {"username": name, "resource_type": resource_type, "resource_id": resource_id}
    try:
        api(url, "POST", "/api/3.0/mlflow/users/permissions/grant", {**resource, "permission": permission})
    except ApiError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # MLflow grants once per resource and has no update: replace the grant, once this one proved valid.
        api(url, "POST", "/api/3.0/mlflow/users/permissions/revoke", resource)
        api(url, "POST", "/api/3.0/mlflow/users/permissions/grant", {**resource, "permission": permission})


def _new_password(name: str) -> str:
    password = os.environ.get(NEW_USER_PASSWORD)
    if password is None:
        if not sys.stdin.isatty():
            raise ServerError(f"no password for {name}: set {NEW_USER_PASSWORD}, or run this in a terminal to be asked")
        try:
            password = getpass.getpass(f"password for {name}: ")
            again = getpass.getpass("again: ")
        except EOFError:
            raise ServerError(f"no password for {name}: the input ended") from None
        if again != password:
            raise ServerError("the two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise ServerError(f"the password for {name} is shorter than {MIN_PASSWORD} characters")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_pipeline.server", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start PostgreSQL and mlflow server in the background")
    commands.add_parser("stop", help="stop mlflow server, then PostgreSQL")
    commands.add_parser("status", help="say what runs (exit 1 when the server does not answer)")
    add = commands.add_parser("add-user", help=f"create a user; the password from {NEW_USER_PASSWORD} or a prompt")
    add.add_argument("name")
    give = commands.add_parser("grant", help="give a user READ, USE, EDIT or MANAGE on an experiment")
    give.add_argument("name")
    give.add_argument("experiment", help="experiment name (created when missing)")
    give.add_argument("permission", help="READ, USE, EDIT, MANAGE or NO_PERMISSIONS")
    give.add_argument("--model", help="also on this registered model (created when missing)")
    for each in (add, give):
        each.add_argument("--url", help="the server (default: this machine's, at MLFLOW_PORT)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            start()
        elif args.command == "stop":
            stop()
        elif args.command == "status":
            return 0 if status() else 1
        else:
            url = args.url or local_url("127.0.0.1", address()[1])
            if args.command == "add-user":
                add_user(url, args.name)
            else:
                grant(url, args.name, args.experiment, args.permission, args.model)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
