"""`make serve` stops whole: SIGTERM (`kill`, `docker stop`) or Ctrl-C (the terminal's SIGINT to its
foreground process group) ends the command, MLflow's scoring server and its workers, and frees the port
within 10 s."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.local_servers import wait_healthy
from support.tools import REPO, clean_env, free_port

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 10


def in_session(session: int) -> list[int]:
    """The live processes of a session (zombies aside: they hold nothing)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    "stop",
    [
        lambda serve: serve.send_signal(signal.SIGTERM),  # the command alone
        lambda serve: os.killpg(serve.pid, signal.SIGINT),  # Ctrl-C: the terminal signals its foreground group
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_serve_stops_with_its_server_and_frees_the_port(untrained_model, tmp_path, stop):
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "mnist_pipeline.serve", "--model", str(untrained_model), "--port", str(port)]
    with open(log, "wb") as out:  # a session of its own: a terminal's, and everything left is found and ended
        serve = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_env(PYTHONPATH=str(REPO / "src")),
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", serve, log)
        assert len(in_session(serve.pid)) >= 2  # the command and MLflow's server, at least
        stop(serve)
        sent = time.monotonic()
        while (in_session(serve.pid) or port_open(port)) and time.monotonic() - sent < 30:
            time.sleep(0.1)
        gone = time.monotonic() - sent
        assert gone < STOP_WITHIN_S and not port_open(port), (gone, in_session(serve.pid), log.read_text())
        assert serve.wait(timeout=5) == 130, log.read_text()
        assert log.read_text().strip().splitlines()[-1].startswith("interrupted (")
    finally:
        for pid in in_session(serve.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        serve.wait()
