"""`make serve`'s app: MLflow's own scoring server for one model, behind a limit on the request's size.

serve.py runs it in uvicorn, a worker process per core, as `mlflow models serve` runs MLflow's app
(mlflow/pyfunc/scoring_server/app.py): each worker loads the model named in the environment.
"""

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

from mnist_pipeline.serving import inference

MODEL, RUNTIME, LIMIT = "MNIST_SERVE_MODEL", "MNIST_SERVE_RUNTIME", "MNIST_SERVE_MAX_BYTES"
MAX_BYTES = 4 * 2**20  # 4 MiB: a phone photo's JPEG, or a batch of a few hundred prepared digits
# A body over the limit is read to its end, up to this, before the 400 goes out: a client still
# sending would otherwise find the connection closed, and never see the answer.
DRAIN_BYTES = 64 * 2**20

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses a request whose body is over `limit` bytes with a 400 and one message, before MLflow
    sees it; a body it lets through is handed on whole. Plain ASGI: no thread, no copy per chunk."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:  # counted as it comes: a chunked body declares no length
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size <= self.limit:
                chunks.append(message.get("body", b""))
            elif size > DRAIN_BYTES:
                break
            more = message.get("more_body", False)
        if size > self.limit:
            chunks.clear()
            return await self._refuse(send)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if handed:  # after the body: what the server says next (a disconnect)
                return await receive()
            handed = True
            return body

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        message = f"request body over {self.limit:,} bytes: send fewer or smaller images"
        content = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def create_app() -> Any:
    """uvicorn's factory: MLflow's scoring app for the model at $MNIST_SERVE_MODEL on the runtime
    $MNIST_SERVE_RUNTIME (torch or onnx), behind BodyLimit($MNIST_SERVE_MAX_BYTES)."""
    from mnist_pipeline.tracking import env

    env.configure()  # before mlflow's import, which reads some of its settings
    from mlflow.pyfunc import scoring_server

    # MLflow quotes the input it refused in its message: abridged, a refusal stays one readable line.
    np.set_printoptions(threshold=20, edgeitems=2)
    model = inference.load_pyfunc(os.environ[MODEL])
    inference.on_runtime(model, os.environ.get(RUNTIME) or "torch", os.environ[MODEL])
    app = scoring_server.init(model)
    return BodyLimit(app, int(os.environ.get(LIMIT) or MAX_BYTES))
