"""What the tracking client and the team server both say to an MLflow server, without importing mlflow."""

import http.client
import ipaddress
import urllib.error
import urllib.parse
import urllib.request

# Marks a model-training experiment for MLflow's own tools; both creators of experiments set it.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class Unreachable(OSError):
    """Nothing answered HTTP at the server's address; the message says why."""


def opener(direct: bool) -> urllib.request.OpenerDirector:
    """urllib's opener; `direct` skips any proxy the environment names (http_proxy covers even
    127.0.0.1, unless no_proxy says otherwise): for a server on this machine."""
    return urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if direct else []))


def on_this_machine(url: str) -> bool:
    """Does `url` name a loopback address (or localhost)?"""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def health(url: str, timeout: float, direct: bool = False) -> int:
    """The HTTP status of `url`/health, whatever it is; Unreachable when nothing answers (`direct`: see opener)."""
    try:
        with opener(direct).open(url.rstrip("/") + "/health", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    # ValueError, InvalidURL (an HTTPException): not a URL urllib can open; other HTTPExceptions: no HTTP there.
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise Unreachable(str(getattr(exc, "reason", exc))) from None
