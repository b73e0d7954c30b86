"""The studies database: the team server's PostgreSQL opened to other hosts for Optuna's shared studies."""

import base64
import hashlib
import hmac
import os
import re
import socket
from dataclasses import dataclass, field

from mnist_pipeline.server.config import (
    EVERY_INTERFACE,
    MIN_PASSWORD,
    ServerError,
    bare_host,
    password_problem,
    port_from,
    url_host,
)

NAME = "studies"  # the role, and the one database it owns and reaches
HOST, PORT, PASSWORD = "STUDIES_HOST", "STUDIES_PORT", "STUDIES_PASSWORD"
DEFAULT_PORT = 5433
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
CLOSED_TO = ("mlflow", "mlflow_auth", "postgres")  # databases no role but the superuser may connect to


@dataclass(frozen=True)
class StudiesAccess:
    """Where the studies database listens, and its role's password (never printed)."""

    host: str
    port: int
    password: str = field(repr=False)


def studies_access() -> StudiesAccess | None:
    """STUDIES_HOST, STUDIES_PORT and STUDIES_PASSWORD; None when STUDIES_HOST is unset (closed)."""
    host = bare_host(os.environ.get(HOST, ""))
    if not host:
        return None
    if not re.fullmatch(r"[A-Za-z0-9.:*-]+", host):
        raise ServerError(
            f"{HOST} = {host!r}: expected one address or host name to listen on (0.0.0.0 or * for every interface)"
        )
    port = port_from(PORT, DEFAULT_PORT)
    password = os.environ.get(PASSWORD, "")
    problem = password_problem(password)
    if problem:
        raise ServerError(
            f"{HOST} opens the studies database, and {PASSWORD} {problem}: set it to the "
            f"password of its role `{NAME}`, at least {MIN_PASSWORD} characters"
        )
    if not (password.isascii() and password.isprintable()):
        # PostgreSQL normalises other passwords (SASLprep) before hashing them; this file's hash does not.
        raise ServerError(f"{PASSWORD} holds characters other than printable ASCII: choose one without them")
    return StudiesAccess(host, port, password)


def worker_url(host: str, port: int) -> str:
    """The SQLAlchemy URL workers on other hosts use; the password comes from their PGPASSWORD."""
    if host in EVERY_INTERFACE:
        host = socket.gethostname()
    return f"postgresql+psycopg2://{NAME}@{url_host(host)}:{port}/{NAME}"


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802, 7677): the password never reaches it."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = [base64.b64encode(part).decode() for part in (salt, stored_key, server_key)]
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64[0]}${b64[1]}:{b64[2]}"


def open_sql(password: str) -> str:
    """A psql script, sent on its standard input, that makes the role and its database, or resets its password."""
    missing = "SELECT 'CREATE {what}' WHERE NOT EXISTS (SELECT FROM {table} WHERE {column} = '{name}') \\gexec\n"
    return (
        missing.format(what=f"ROLE {NAME}", table="pg_roles", column="rolname", name=NAME)
        + f"ALTER ROLE {NAME} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"PASSWORD '{scram_verifier(password)}';\n"
        + missing.format(what=f"DATABASE {NAME} OWNER {NAME}", table="pg_database", column="datname", name=NAME)
        + "".join(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;\n" for db in CLOSED_TO)
    )


def hba_conf(access: StudiesAccess | None) -> str:
    """pg_hba.conf: this machine through the socket as today; over TCP the studies role alone, by password."""
    tcp = f"host    {NAME}  {NAME}  all  scram-sha-256\n" if access else ""
    return (
        "# Written by mnist_pipeline.server on every start.\n"
        "# The socket's folder is the access control for this machine (see mnist_pipeline.server.postgres).\n"
        "local   all      all      trust\n"
        f"{tcp}"
        "host    all      all      all  reject\n"
    )
