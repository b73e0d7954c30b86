"""Users and permissions on a running team server, through MLflow's REST API as its admin."""

import base64
import getpass
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from mnist_pipeline.errors import brief
from mnist_pipeline.server.config import MIN_PASSWORD, ServerError, password_problem
from mnist_pipeline.tracking.rest import EXPERIMENT_TAGS, on_this_machine, opener

ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own variable: it creates the admin from it
NEW_USER_PASSWORD = "MLFLOW_NEW_USER_PASSWORD"


class ApiError(ServerError):
    """The MLflow server answered a request with an HTTP error."""

    def __init__(self, message: str, code: int, error_code: str = ""):
        super().__init__(message)
        self.code = code
        self.error_code = error_code  # MLflow's name for it, e.g. RESOURCE_ALREADY_EXISTS


def admin_password() -> str:
    password = os.environ.get(ADMIN_PASSWORD, "")
    problem = password_problem(password)
    if problem:
        raise ServerError(
            f"{ADMIN_PASSWORD} {problem}: set it to the admin's password, at least "
            f"{MIN_PASSWORD} characters (export {ADMIN_PASSWORD}=...)"
        )
    return password


def api(url: str, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
    """One request to the server as its admin (MLFLOW_AUTH_ADMIN_USERNAME, default admin); to a server on
    this machine never through a proxy, which would get the admin's credentials and new users' passwords."""
    user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    token = base64.b64encode(f"{user}:{admin_password()}".encode()).decode()
    request = urllib.request.Request(
        url.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else ""),
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with opener(direct=on_this_machine(url)).open(request, timeout=30) as response:
            return dict(json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        said, error_code = exc.read().decode(errors="replace"), ""
        try:
            answer = json.loads(said)
            said, error_code = answer.get("message", said), answer.get("error_code", "")
        except (ValueError, AttributeError):
            pass  # not MLflow's JSON: keep the text
        if exc.code == 401:
            said = f"the admin's credentials were refused: set {ADMIN_PASSWORD} to the admin's password"
        raise ApiError(f"{url}: HTTP {exc.code}: {brief(said)}", exc.code, error_code) from None
    # ValueError, InvalidURL (an HTTPException): not a URL urllib can open; other HTTPExceptions: no HTTP there.
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise ServerError(
            f"no MLflow server answers at {url} ({getattr(exc, 'reason', exc)}); start one with `make server`"
        ) from None


def add_user(url: str, name: str) -> None:
    password = _new_password(name)
    api(url, "POST", "/api/2.0/mlflow/users/create", {"username": name, "password": password})
    print(f"created user {name}; give them access with: python -m mnist_pipeline.server grant {name} EXPERIMENT EDIT")


def grant(url: str, name: str, experiment: str, permission: str, model: str | None) -> None:
    """Give a user a permission on an experiment (and a registered model), creating them if missing."""
    permission = permission.upper()
    api(url, "GET", "/api/2.0/mlflow/users/get", query={"username": name})  # a typo fails before creating anything
    try:
        found = api(url, "GET", "/api/2.0/mlflow/experiments/get-by-name", query={"experiment_name": experiment})
        experiment_id = found["experiment"]["experiment_id"]
    except ApiError as exc:
        if exc.code != 404:
            raise
        tags = [{"key": key, "value": value} for key, value in EXPERIMENT_TAGS.items()]
        experiment_id = api(url, "POST", "/api/2.0/mlflow/experiments/create", {"name": experiment, "tags": tags})[
            "experiment_id"
        ]
        print(f"created experiment {experiment} (id {experiment_id})")
    _grant(url, name, "experiment", experiment_id, permission)
    print(f"{name}: {permission} on experiment {experiment} (id {experiment_id})")
    if model:
        try:
            api(url, "GET", "/api/2.0/mlflow/registered-models/get", query={"name": model})
        except ApiError as exc:
            if exc.code != 404:
                raise
            api(url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": model})
            print(f"created registered model {model}")
        _grant(url, name, "registered_model", model, permission)
        print(f"{name}: {permission} on registered model {model}")


def _grant(url: str, name: str, resource_type: str, resource_id: str, permission: str) -> None:
    resource = {"username": name, "resource_type": resource_type, "resource_id": resource_id}
    try:
        api(url, "POST", "/api/3.0/mlflow/users/permissions/grant", {**resource, "permission": permission})
    except ApiError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # MLflow grants once per resource and has no update: replace the grant, once this one proved valid.
        api(url, "POST", "/api/3.0/mlflow/users/permissions/revoke", resource)
        api(url, "POST", "/api/3.0/mlflow/users/permissions/grant", {**resource, "permission": permission})


def _new_password(name: str) -> str:
    password = os.environ.get(NEW_USER_PASSWORD)
    if password is None:
        if not sys.stdin.isatty():
            raise ServerError(f"no password for {name}: set {NEW_USER_PASSWORD}, or run this in a terminal to be asked")
        try:
            password = getpass.getpass(f"password for {name}: ")
            again = getpass.getpass("again: ")
        except EOFError:
            raise ServerError(f"no password for {name}: the input ended") from None
        if again != password:
            raise ServerError("the two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise ServerError(f"the password for {name} is shorter than {MIN_PASSWORD} characters")
    return password
