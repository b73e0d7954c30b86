"""make dashboard: optuna-dashboard on the studies' storage, to watch a search while it runs.

    python -m mnist_pipeline.sweep.dashboard [--host 127.0.0.1] [--port 8080] [--storage URL]

The storage is the one `sweep run` uses: sweeps.journal at the project root, or the database of
--storage (or MNIST_SWEEP_STORAGE). The dashboard reads it on every request: trials appear as
they finish. Ctrl-C stops it.
"""

import argparse
import errno
import os
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna_dashboard

from mnist_pipeline import cli
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.files import project_root
from mnist_pipeline.stages import exit_now
from mnist_pipeline.sweep.storage import JOURNAL, STORAGE_ENV, open_storage


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request (a page load makes dozens) would bury the link


def serve(host: str, port: int, storage: str | None) -> None:
    """Serve the dashboard until Ctrl-C; a port in use is one error line."""
    root = project_root()
    app = optuna_dashboard.wsgi(open_storage(storage, root))
    try:
        server = make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PipelineError(f"port {port} on {host} is in use: choose another with DASHBOARD_PORT") from None
        raise
    with server:
        where = "--storage" if storage else f"${STORAGE_ENV}" if os.environ.get(STORAGE_ENV) else root / JOURNAL
        print(f"dashboard: http://{host}:{port}/dashboard/ (studies from {where}); Ctrl-C stops it", flush=True)
        server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--storage",
        help=f"database URL of the studies (default: ${STORAGE_ENV}, else {JOURNAL} at the project root)",
    )
    args = parser.parse_args(argv)
    return cli.run(lambda: serve(args.host, args.port, args.storage), interrupted="dashboard stopped")


if __name__ == "__main__":
    exit_now(main())
