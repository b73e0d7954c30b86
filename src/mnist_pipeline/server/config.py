"""The team server's settings from the environment, its state folder's layout, and its error."""

import ipaddress
import os
import urllib.parse
from pathlib import Path

from mnist_pipeline.errors import PipelineError

PG_PORT = 5432  # the cluster's port while the studies database is closed: it then only names the socket file
EVERY_INTERFACE = ("0.0.0.0", "::", "*", "")
MIN_PASSWORD = 12  # MLflow's rule (mlflow.utils.validation._validate_password), kept for every password here


class ServerError(PipelineError):
    """A problem the user can fix; printed alone as `error: ...`."""


class ServerPaths:
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

    def db_uri(self, database: str, port: int) -> str:
        # No password anywhere: the socket's folder is the access control (see Postgres.create).
        host = urllib.parse.quote(str(self.pg), safe="/")
        return f"postgresql+psycopg2://postgres@/{database}?host={host}&port={port}"


def server_paths() -> ServerPaths:
    return ServerPaths(Path(os.environ.get("MLFLOW_SERVER_DIR") or ".mlflow-server").resolve())


def password_problem(password: str) -> str | None:
    """What makes `password` unfit to protect the server (unset, too short), or None."""
    if not password:
        return "is not set"
    if len(password) < MIN_PASSWORD:
        return f"is shorter than {MIN_PASSWORD} characters"
    return None


def port_from(variable: str, default: int) -> int:
    value = os.environ.get(variable) or str(default)
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ServerError(f"{variable} = {value!r}: expected a port number (1-65535)")
    return int(value)


def address() -> tuple[str, int]:
    """MLFLOW_HOST (default 127.0.0.1: this machine only) and MLFLOW_PORT (default 5000)."""
    return bare_host(os.environ.get("MLFLOW_HOST") or "127.0.0.1"), port_from("MLFLOW_PORT", 5000)


def bare_host(host: str) -> str:
    """A host as sockets and servers take it: `[::1]`, as written in URLs, is `::1`."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def url_host(host: str) -> str:
    """A host as a URL holds it: an IPv6 address in brackets."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host  # a name


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a server bound to `host`."""
    if host in EVERY_INTERFACE:
        host = "::1" if ":" in host else "127.0.0.1"
    return f"http://{url_host(host)}:{port}"
