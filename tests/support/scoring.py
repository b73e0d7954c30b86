"""The scoring server as `make serve` starts it, and what a client sends it and checks in its answers."""

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_pipeline.data import preprocess

from support.local_servers import stop, wait_healthy
from support.tools import free_port

NAME, CHAMPION_URI = "mnist-mlp", "models:/mnist-mlp@champion"
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def strokes() -> np.ndarray:
    """Three hand-made digits (a 1, a 0, a 7) prepared as predict prepares a file: (3, 1, 28, 28)."""
    shapes = [
        lambda d: d.line([(100, 30), (100, 170)], fill="black", width=14),
        lambda d: d.ellipse([50, 25, 150, 175], outline="black", width=14),
        lambda d: d.line([(50, 35), (150, 35), (85, 175)], fill="black", width=14, joint="curve"),
    ]
    prepared = []
    for draw in shapes:
        image = Image.new("L", (200, 200), 255)
        draw(ImageDraw.Draw(image))
        prepared.append(preprocess.prepare(image))
    return np.stack(prepared)[:, None]


def start_serving(root: Path, env: dict, *options: str) -> tuple[str, subprocess.Popen, Path]:
    """`make serve`'s command (with `options`) in `root` on a free port, in its own session, answering:
    URL, process, log."""
    port = free_port()
    log = root / "serve.log"
    command = [sys.executable, "-m", "mnist_pipeline.serve", "--host", "127.0.0.1", "--port", str(port), *options]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log)  # the scoring server answers /health once the model is loaded
    except BaseException:
        stop(server)
        raise
    return url, server, log


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with LOOPBACK.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def inputs(images: np.ndarray) -> bytes:
    """MLflow's documented JSON for tensor input."""
    return json.dumps({"inputs": images.tolist()}).encode()


def images_table(files: list[Path]) -> bytes:
    """Image files as the served model takes them: base64 in the one column of MLflow's dataframe_split."""
    data = [[base64.b64encode(path.read_bytes()).decode()] for path in files]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": data}}).encode()


def check_answer(answer: dict, n: int) -> list[int]:
    """Asserts the documented response form; returns the classes."""
    assert list(answer) == ["predictions"] and len(answer["predictions"]) == n
    for each in answer["predictions"]:
        assert list(each) == ["class", "probabilities"]
        assert isinstance(each["class"], int) and len(each["probabilities"]) == 10
        assert sum(each["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert each["class"] == int(np.argmax(each["probabilities"]))
    return [each["class"] for each in answer["predictions"]]
