"""The /health probe that the tracking client and the team server share."""

import http.server
import threading

import pytest

from mnist_pipeline.tracking.rest import Unreachable, health

from support.tools import free_port


@pytest.fixture
def answering():
    """A real HTTP server on loopback answering /health with the status the test sets."""
    statuses = {"/health": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", statuses
    server.shutdown()
    server.server_close()


def test_health_gives_the_status_whatever_it_is(answering):
    url, statuses = answering
    assert health(url, timeout=5, direct=True) == 200
    statuses["/health"] = 503
    assert health(url, timeout=5, direct=True) == 503


def test_health_of_nothing_says_why(monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with pytest.raises(Unreachable, match="Connection refused"):
        health(f"http://127.0.0.1:{free_port()}", timeout=5)


def test_a_direct_probe_ignores_the_proxy(answering, monkeypatch):
    url, _ = answering
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("no_proxy", "")
    assert health(url, timeout=5, direct=True) == 200
    with pytest.raises(Unreachable):
        health(url, timeout=5)  # through the proxy, which does not answer
