"""The team server's settings and state folder, checked without starting a server."""

import os
import shutil
from pathlib import Path

import pytest

from mnist_pipeline.server.config import PG_PORT, ServerPaths, local_url
from mnist_pipeline.server.postgres import Postgres, pg_owner
from mnist_pipeline.server.process import secret_key

from support.team_server import needs_postgres, new_password, server_cli, server_env, state_folder
from support.tools import free_port

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:5000"),
        ("::1", "http://[::1]:5000"),
        ("0.0.0.0", "http://127.0.0.1:5000"),
        ("::", "http://[::1]:5000"),
        ("mlflow.example.com", "http://mlflow.example.com:5000"),
    ],
)
def test_local_urls_put_ipv6_addresses_in_brackets(host, url):
    assert local_url(host, 5000) == url


@pytest.mark.slow
@pytest.mark.parametrize(("host", "url_host"), [("127.0.0.3", "127.0.0.3"), ("::1", "[::1]"), ("[::1]", "[::1]")])
@pytest.mark.parametrize("command", [["add-user", "dave"], ["grant", "dave", "shared", "READ"]])
def test_admin_commands_go_to_mlflow_host(host, url_host, command):
    state, port = state_folder(), free_port()
    env = {**server_env(state, port, new_password()), "MLFLOW_HOST": host, "MLFLOW_NEW_USER_PASSWORD": new_password()}
    try:
        done = server_cli(*command, env=env, check=False)
    finally:
        shutil.rmtree(state.parent)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: no MLflow server answers at http://{url_host}:{port} (")


def private_postgres(root: Path) -> Postgres:
    """PostgreSQL as `start` runs it, for what happens before any of its programs runs."""
    return Postgres(Path("/nonexistent"), pg_owner(), ServerPaths(root))


def test_an_existing_state_folder_keeps_its_mode():
    root = state_folder()
    try:
        root.mkdir(mode=0o755)
        root.chmod(0o755)
        private_postgres(root).prepare(PG_PORT)
        assert root.stat().st_mode & 0o777 == 0o755
        assert (root / "postgres").is_dir()
    finally:
        shutil.rmtree(root.parent)


def test_a_state_folder_made_by_start_is_private():
    root = state_folder()
    try:
        private_postgres(root / "deeper").prepare(PG_PORT)
        assert (root / "deeper").stat().st_mode & 0o777 == (0o711 if os.geteuid() == 0 else 0o700)
    finally:
        shutil.rmtree(root.parent)


@pytest.mark.slow
@AS_ROOT
@needs_postgres
def test_a_state_folder_postgres_cannot_enter_is_refused_before_anything_starts():
    state = state_folder()
    try:
        state.mkdir(mode=0o700)
        state.chmod(0o700)
        done = server_cli("start", env=server_env(state, free_port(), new_password()), check=False)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == (
            f"error: PostgreSQL runs as `postgres`, which cannot pass through {state} (mode 700): "
            f"let it (chmod o+x {state}), or set MLFLOW_SERVER_DIR to a folder it can reach\n"
        )
        assert state.stat().st_mode & 0o777 == 0o700 and not list(state.iterdir())
    finally:
        server_cli("stop", env=server_env(state, free_port(), None), check=False)
        shutil.rmtree(state.parent)


def test_an_empty_secret_key_left_by_a_crash_is_replaced(tmp_path):
    paths = ServerPaths(tmp_path)
    paths.secret_key.touch()  # what a crash between creating and writing the file used to leave
    key = secret_key(paths)
    assert len(key) >= 32 and paths.secret_key.read_text() == key + "\n"
    assert paths.secret_key.stat().st_mode & 0o777 == 0o600
    assert secret_key(paths) == key  # kept from then on
    assert [p.name for p in tmp_path.iterdir()] == ["flask-secret-key"]  # no temporary file left


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {},
            "STUDIES_HOST opens the studies database, and STUDIES_PASSWORD is not set: set it to the password of "
            "its role `studies`, at least 12 characters",
        ),
        (
            {"STUDIES_PASSWORD": "eleven-char"},
            "STUDIES_HOST opens the studies database, and STUDIES_PASSWORD is "
            "shorter than 12 characters: set it to the password of its role `studies`, "
            "at least 12 characters",
        ),
        (
            {"STUDIES_PASSWORD": "pässwörd-1234"},
            "STUDIES_PASSWORD holds characters other than printable ASCII: choose one without them",
        ),
        (
            {"STUDIES_PORT": "65536", "STUDIES_PASSWORD": "long-enough-1234"},
            "STUDIES_PORT = '65536': expected a port number (1-65535)",
        ),
        (
            {"STUDIES_HOST": "a b", "STUDIES_PASSWORD": "long-enough-1234"},
            "STUDIES_HOST = 'a b': expected one address or host name to listen on (0.0.0.0 or * for every interface)",
        ),
    ],
)
@pytest.mark.slow
def test_a_studies_database_without_a_good_setting_is_refused_before_anything_starts(settings, message):
    state = state_folder()
    try:
        env = {**server_env(state, free_port(), new_password()), "STUDIES_HOST": "127.0.0.1", **settings}
        done = server_cli("start", env=env, check=False)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", f"error: {message}\n")
        assert not state.exists()
    finally:
        shutil.rmtree(state.parent)


@pytest.mark.slow
def test_the_studies_port_must_differ_from_mlflows():
    state, port = state_folder(), free_port()
    try:
        env = {
            **server_env(state, port, new_password()),
            "STUDIES_HOST": "127.0.0.1",
            "STUDIES_PORT": str(port),
            "STUDIES_PASSWORD": new_password(),
        }
        done = server_cli("start", env=env, check=False)
        assert done.stderr == (
            f"error: STUDIES_PORT and MLFLOW_PORT are both {port}: give the studies database another port\n"
        )
        assert not state.exists()
    finally:
        shutil.rmtree(state.parent)
