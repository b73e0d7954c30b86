"""No password in any line or file, no request through a proxy it should not take, and MLflow's telemetry off
in every command: a wrong password, a bad URL and an unreachable host fed to every command that takes one
(sweep, server, predict, serve), an HTTP proxy in the environment of the team server's admin commands, and
each `python -m` entry point watched as it first imports mlflow."""

import http.server
import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from support.hosts import Hosts, network_namespaces
from support.stores import seed_store
from support.studies import write_sweep
from support.synthetic import write_synthetic_mnist
from support.team_server import needs_postgres
from support.tools import REPO, clean_env, free_port

pytestmark = pytest.mark.slow

SECRET = "pw-" + secrets.token_hex(8)
UNREACHABLE = "10.231.8.99"  # in a namespace whose only device is loopback: no route to it
COMMANDS = {  # each as a user types it, in a folder with what it needs
    "sweep": ["-m", "mnist_pipeline.sweep", "run", "tiny"],
    "server": ["-m", "mnist_pipeline.server", "add-user", "bob"],
    "predict": ["-m", "mnist_pipeline.predict", "one.png"],
    "serve": ["-m", "mnist_pipeline.serve"],
}


def workdir(folder: Path) -> Path:
    """params.yaml, sweep.yaml, training files and an image: what any of COMMANDS reads. No model: predict
    and serve, finding no champion, stop at the missing models/model.pt."""
    (folder / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_sweep(folder, trials=1, epochs=1)
    write_synthetic_mnist(folder / "data" / "mnist", n_train=300, n_test=8)
    Image.new("L", (28, 28), 255).save(folder / "one.png")
    return folder


def run(folder: Path, name: str, *args: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, *COMMANDS[name], *args]
    env = clean_env(PYTHONPATH=str(REPO / "src"), MLFLOW_NEW_USER_PASSWORD=SECRET + "-new", **env)
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def assert_no_secret(folder: Path, done: subprocess.CompletedProcess) -> None:
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "Traceback" not in said and said.strip().splitlines()[-1].startswith("error: "), said
    assert SECRET not in said, said
    assert not [p for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def urls(name: str, database: str, server: str) -> tuple[list[str], dict[str, str]]:
    """The command's arguments and environment with a URL that holds the password: of the studies
    database at `database` (host:port) for sweep, of an MLflow server at `server` for the others."""
    if name == "sweep":
        return ["--storage", f"postgresql+psycopg2://studies:{SECRET}@{database}/studies"], {}
    if name == "server":
        return ["--url", f"http://admin:{SECRET}@{server}"], {"MLFLOW_AUTH_ADMIN_PASSWORD": SECRET}
    return [], {"MLFLOW_TRACKING_URI": f"http://admin:{SECRET}@{server}"}


@pytest.fixture(scope="module")
def isolated() -> Iterator[Hosts]:
    with network_namespaces("10.231.8") as hosts:
        yield hosts


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_url_holding_a_password_is_an_error_line_without_it(tmp_path, name):
    args, env = urls(name, "127.0.0.1:54x2", "127.0.0.1:99999")  # no ports: URLs that do not parse
    assert_no_secret(tmp_path, run(workdir(tmp_path), name, *args, **env))


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unreachable_host_is_an_error_line_without_the_password(tmp_path, isolated, name):
    args, env = urls(name, f"{UNREACHABLE}:5432", f"{UNREACHABLE}:5000")
    namespace = ("ip", "netns", "exec", isolated["a"][0])
    assert_no_secret(tmp_path, run(workdir(tmp_path), name, *args, prefix=namespace, **env))


@needs_postgres
@pytest.mark.parametrize("name", COMMANDS)
def test_a_wrong_password_is_an_error_line_without_it(tmp_path, team_server, name):
    env = team_server.client_env("admin", SECRET)
    args = ["--url", team_server.url] if name == "server" else []
    done = run(workdir(tmp_path), name, *args, MLFLOW_AUTH_ADMIN_PASSWORD=SECRET, **env)
    assert_no_secret(tmp_path, done)
    if name in ("sweep", "server"):  # predict and serve take it as no champion: the checkpoint is missing
        assert "refused" in done.stderr


class Proxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy that forwards nothing: it records each request, and answers 502."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(f"{self.command} {self.path} {self.headers.get('Authorization', '')}")
        self.send_error(502)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@needs_postgres
def test_the_admin_commands_never_go_through_a_proxy(team_server):
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        env = {name: url for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")}
        team_server.cli("add-user", "proxied", MLFLOW_NEW_USER_PASSWORD=SECRET, no_proxy="", NO_PROXY="", **env)
        team_server.cli("grant", "proxied", "mnist-mlp", "READ", no_proxy="", NO_PROXY="", **env)
        assert team_server.cli("status", no_proxy="", NO_PROXY="", **env).returncode == 0
    finally:
        proxy.shutdown()
    assert Proxy.seen == []


ENTRY_POINTS = sorted(
    ".".join(p.relative_to(REPO / "src").with_suffix("").parts).removesuffix(".__main__")
    for p in (REPO / "src").rglob("*.py")
    if 'if __name__ == "__main__":' in p.read_text()
)
FIRST_IMPORT = Path(__file__).parent / "support" / "first_import.py"


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_mlflow_telemetry_is_off_in_every_entry_point(tmp_path, module):
    """Whenever a command first imports mlflow, its environment has telemetry off."""
    report = tmp_path / "first-import.json"
    name = module.rsplit(".", 1)[1]
    # predict, serve and demo import mlflow only to look for the champion: a store makes them look.
    args = {"predict": ["one.png"], "serve": [], "demo": []}.get(name, ["--help"])
    env = clean_env(PYTHONPATH=str(REPO / "src"), MLFLOW_TRACKING_URI=f"sqlite:///{seed_store(tmp_path)}")
    del env["MLFLOW_DISABLE_TELEMETRY"]
    command = [sys.executable, str(FIRST_IMPORT), str(report), module, *args]
    subprocess.run(command, cwd=workdir(tmp_path), env=env, capture_output=True, timeout=300)
    if report.exists():  # some never import it
        assert json.loads(report.read_text()).get("MLFLOW_DISABLE_TELEMETRY") == "true", module
