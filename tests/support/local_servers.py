"""Servers that tests start on loopback: a real `mlflow server`, and waiting for and stopping any of them."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from support.tools import free_port

START_WITHIN_S = 180  # `mlflow server --workers 1` took 12 to 76 s to answer on 2 busy cores


@contextlib.contextmanager
def mlflow_server(store_uri: str, *options: str, cwd: Path, log: Path, env: dict[str, str]) -> Iterator[str]:
    """`mlflow server` on the store `store_uri`, one worker, its output in `log`; yields its URL and
    stops the server and its children after."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", store_uri, *options]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No huey job runner (8 more processes, seconds of start-up): no test needs one.
    env = {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server, log)
        yield url
    finally:
        stop(server)


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    """Until `url`/health answers 200; fails with the server's log if it exits or takes too long."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with direct.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.25)
    raise AssertionError(f"server not healthy after {START_WITHIN_S} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (it runs uvicorn as a child), SIGKILL what stays."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
