"""A real `mlflow server` (SQLite, proxied artifacts) behind a gateway that a test can make lose or fail answers."""

import contextlib
import http.client
import http.server
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.local_servers import mlflow_server
from support.tools import clean_env

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class Faults:
    """What the gateway does to requests whose "METHOD /path" starts with a key: `lose` forwards the
    request (the server acts) and then closes the connection unanswered, that many times; `fail`
    answers with that HTTP error status without forwarding, every time."""

    lose: dict[str, int] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)  # the requests whose answer was lost
    failed: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.lose.clear()
        self.fail.clear()
        self.lost.clear()
        self.failed.clear()


@dataclass
class Gateway:
    url: str  # the gateway, for the code under test
    server_url: str  # the tracking server itself, for the test's own checks
    faults: Faults


def _handler(target: tuple[str, int], faults: Faults) -> type[http.server.BaseHTTPRequestHandler]:
    class Relay(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def relay(self) -> None:
            request = f"{self.command} {self.path}"
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = next((faults.fail[key] for key in faults.fail if request.startswith(key)), None)
            if status is not None:
                faults.failed.append(request)
                self.answer(status, {"Content-Type": "text/plain"}, b"the gateway says no")
                return
            upstream = http.client.HTTPConnection(*target, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
            upstream.close()
            lose = next((key for key in faults.lose if request.startswith(key) and faults.lose[key] > 0), None)
            if lose is not None:  # the server acted; its answer never arrives
                faults.lose[lose] -= 1
                faults.lost.append(request)
                self.close_connection = True
                return
            self.answer(response.status, dict(response.getheaders()), answer)

        def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in HOP_HEADERS:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

    return Relay


@contextlib.contextmanager
def tracking_server_behind_gateway() -> Iterator[Gateway]:
    folder = Path(tempfile.mkdtemp(prefix="mlflow-gateway-"))
    store, artifacts = f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")
    faults = Faults()
    try:
        with mlflow_server(
            store, "--artifacts-destination", artifacts, cwd=folder, log=folder / "server.log", env=clean_env()
        ) as url:
            target = ("127.0.0.1", urllib.parse.urlsplit(url).port or 80)
            relay = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(target, faults))
            threading.Thread(target=relay.serve_forever, daemon=True).start()
            try:
                yield Gateway(f"http://127.0.0.1:{relay.server_address[1]}", url, faults)
            finally:
                relay.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
