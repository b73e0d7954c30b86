"""Patience with a tracking server that went away: a call retried while the server is down or restarting,
never past MNIST_TRACKING_PATIENCE_S, and never for an answer that waiting does not change."""

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from mlflow.exceptions import MlflowException

from mnist_pipeline.errors import TrackingError, brief
from mnist_pipeline.tracking.env import is_server

PATIENCE_ENV = "MNIST_TRACKING_PATIENCE_S"
DEFAULT_PATIENCE_S = 600.0
# A gateway whose server is down or restarting, or a server that says it is overloaded: worth waiting
# for. Any other error status (a 500 from a broken store, a 4xx refusal) comes back the same each time.
WAITED_FOR_STATUSES = frozenset({502, 503, 504})
# No answer at all: refused, reset, cut off mid-answer or timed out.
NO_ANSWER = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    TimeoutError,
)

T = TypeVar("T")


def limit_s() -> float:
    """How long a run waits for a tracking server that stopped answering (MNIST_TRACKING_PATIENCE_S)."""
    text = os.environ.get(PATIENCE_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_PATIENCE_S
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise TrackingError(f"{PATIENCE_ENV}={text!r}: expected a number of seconds >= 0")
    return seconds


def patiently(uri: str, call: Callable[[], T], stop: threading.Event | None = None) -> T:
    """`call()`, retried while the tracking server at `uri` does not answer, for up to limit_s(); an
    error it answered with is a TrackingError at once. A set `stop` ends the waiting early."""
    patience = limit_s()
    gave_notice, deadline, pause = False, time.monotonic() + patience, 0.5
    while True:
        try:
            result = call()
        except (MlflowException, OSError) as exc:
            if is_server(uri) and unanswered(exc):
                failure = exc
            elif isinstance(exc, MlflowException | requests.HTTPError):
                raise _answered(uri, exc) from None
            else:
                raise  # not the store's doing (a local file, say)
        else:
            if gave_notice:
                print(f"tracking: {uri} answers again; the record is complete", file=sys.stderr, flush=True)
            return result
        if time.monotonic() > deadline:
            raise TrackingError(
                f"MLflow tracking server {uri} did not answer for {patience:.0f} s; "
                f"the run can be resumed by running the stage again ({brief(failure)})"
            )
        if not gave_notice:
            print(
                f"tracking: {uri} does not answer ({brief(failure, 120)}); training goes on, and the record "
                f"waits for it (up to {patience:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            gave_notice = True
        if stop is None:
            time.sleep(pause)
        elif stop.wait(pause):
            raise TrackingError(f"MLflow tracking server {uri}: stopped waiting for it ({brief(failure)})")
        pause = min(pause * 2, 5.0)


def unanswered(exc: BaseException) -> bool:
    """A server that is down, restarting or overloaded (worth waiting for), not one that answered."""
    chain: BaseException | None = exc
    while chain is not None:  # MLflow raises its own exception while handling the connection's
        if isinstance(chain, NO_ANSWER):
            return True
        chain = chain.__cause__ or chain.__context__
    return http_status(exc) in WAITED_FOR_STATUSES


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a server answered with, where the exception keeps it."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code
    if isinstance(exc, MlflowException):
        # MLflow's client keeps the status of an answer it did not parse (a gateway's error page, or
        # one its HTTP library gave up on: 408, 429 and 5xx) only in its message, as INTERNAL_ERROR (500).
        found = re.search(r"(?:failed with error code|too many) (\d{3}) ", str(exc))
        return int(found.group(1)) if found else int(exc.get_http_status_code())
    return None


def _answered(uri: str, exc: MlflowException | requests.HTTPError) -> TrackingError:
    """An error the store answered with, as one line."""
    status = http_status(exc)
    if is_server(uri) and status is not None and status >= 500:
        return TrackingError(
            f"MLflow tracking server {uri} failed a request (HTTP {status}), an error that "
            f"waiting does not clear: {brief(exc)}; the run can be resumed by running the stage "
            "again once the server is mended"
        )
    return TrackingError(f"MLflow tracking store {uri}: {brief(exc)}")
