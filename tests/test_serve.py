"""The logged MLflow model, served as `make serve` does: MLflow's own scoring server, real HTTP requests.

The model is logged by tracking.registry.log_model into a temporary SQLite store, registered as
mnist-mlp@champion, and served from that URI by `mlflow models serve --env-manager local`.
Where real MNIST is available (MNIST_MIRROR) it is the session's trained model, else random
weights: the form of the answers is the same, only the real-digit test needs the trained one.
"""

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageDraw

from mnist_pipeline import inference, preprocess
from mnist_pipeline.tracking import registry

from servers import free_port
from support.local_servers import stop, wait_healthy
from support.tools import MNIST_MIRROR, REPO, clean_env

pytestmark = pytest.mark.slow
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


@pytest.fixture(scope="module")
def champion(request, untrained_model, tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """The store's URI, its folder, and the checkpoint logged as mnist-mlp@champion."""
    checkpoint = request.getfixturevalue("trained_model") if MNIST_MIRROR else untrained_model
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment(NAME, artifact_location=(root / "mlruns").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        model_uri = registry.log_model(checkpoint, strokes())
    version = mlflow.register_model(model_uri, NAME).version
    MlflowClient(uri).set_registered_model_alias(NAME, "champion", version)
    yield uri, root, checkpoint
    mlflow.set_tracking_uri(previous)  # the process-wide URI: no other test may inherit this store


def start_serving(root: Path, env: dict) -> tuple[str, subprocess.Popen, Path]:
    """`make serve`'s command in `root` on a free port, in its own session, answering: URL, process, log."""
    port = free_port()
    log = root / "serve.log"
    command = [sys.executable, "-m", "mnist_pipeline.serve", "--host", "127.0.0.1", "--port", str(port)]
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


@pytest.fixture(scope="module")
def scoring_server(champion) -> Iterator[str]:
    """`make serve` in the store's folder: the store's champion, served; its base URL."""
    _, root, _ = champion
    url, server, log = start_serving(root, clean_env(PYTHONPATH=str(REPO / "src")))  # the default store: ./mlflow.db
    try:
        assert log.read_text().startswith(f"serve: model {CHAMPION_URI} (version 1, mlp, test accuracy not known)")
        yield url
    finally:
        stop(server)


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


def check_answer(answer: dict, n: int) -> list[int]:
    """Asserts the documented response form; returns the classes."""
    assert list(answer) == ["predictions"] and len(answer["predictions"]) == n
    for each in answer["predictions"]:
        assert list(each) == ["class", "probabilities"]
        assert isinstance(each["class"], int) and len(each["probabilities"]) == 10
        assert sum(each["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert each["class"] == int(np.argmax(each["probabilities"]))
    return [each["class"] for each in answer["predictions"]]


def test_answers_class_and_probabilities_of_each_image(scoring_server, champion):
    _, _, checkpoint = champion
    images = strokes()
    status, answer = post(scoring_server, inputs(images))
    assert status == 200
    check_answer(answer, len(images))
    # The very model in the checkpoint: the same probabilities as predict computes from it.
    expected = inference.from_checkpoint(checkpoint)[0](images)
    assert np.allclose([p["probabilities"] for p in answer["predictions"]], expected, atol=1e-6)


@pytest.mark.real_data
def test_reads_real_test_digits(scoring_server, real_digits):
    images, labels = real_digits
    status, answer = post(scoring_server, inputs(images[:, None].astype(np.float32) / 255))
    assert status == 200
    classes = np.array(check_answer(answer, len(labels)))
    assert (classes == labels).mean() >= 0.9


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"not json", "application/json", "Ensure that input is a valid JSON formatted string"),
        (
            json.dumps({"inputs": np.zeros((2, 28, 28)).tolist()}).encode(),
            "application/json",
            r"Shape of input \(2, 28, 28\) does not match expected shape \(-1, 1, 28, 28\)",
        ),
        (json.dumps({"inputs": [[["a"]]]}).encode(), "application/json", "could not convert string to float"),
        (json.dumps({"pixels": [0.5]}).encode(), "application/json", "must be a JSON dictionary with exactly one of"),
        (b"1,2,3", "text/plain", "only supports the following content types"),
    ],
    ids=["not-json", "wrong-shape", "not-numbers", "unknown-key", "wrong-content-type"],
)
def test_malformed_input_gets_4xx_with_a_message_and_serving_goes_on(scoring_server, body, content_type, message):
    request = urllib.request.Request(f"{scoring_server}/invocations", data=body, headers={"Content-Type": content_type})
    with pytest.raises(urllib.error.HTTPError) as refused:
        LOOPBACK.open(request, timeout=30)
    assert 400 <= refused.value.code < 500
    assert re.search(message, refused.value.read().decode())
    status, answer = post(scoring_server, inputs(strokes()))
    assert status == 200 and check_answer(answer, 3)


def test_logged_model_declares_its_input_output_and_pins(champion):
    uri, _, _ = champion
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(CHAMPION_URI)
    assert info.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 1, 28, 28)}}
    ]
    assert info.signature.outputs.to_dict() == [
        {"type": "long", "name": "class", "required": True},
        {"type": "array", "items": {"type": "double"}, "name": "probabilities", "required": True},
    ]
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI))
    pins = (local / "requirements.txt").read_text().split()
    assert [p.split("==")[0] for p in pins] == ["torch", "numpy", "pandas", "mlflow"]
    assert all(re.fullmatch(r"[a-z]+==\d+\.\d+\.\d+", p) for p in pins), pins
    assert (local / "artifacts" / "model.pt").is_file()

    answer = mlflow.pyfunc.load_model(CHAMPION_URI).predict(strokes())
    assert list(answer.columns) == ["class", "probabilities"] and answer["class"].dtype == np.int64


def test_predict_takes_the_model_from_the_store(champion, tmp_path):
    uri, _, checkpoint = champion
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).ellipse([50, 25, 150, 175], outline="black", width=14)
    image.save(tmp_path / "zero.png")
    env = clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO / "src"))
    by_uri = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", "--model-uri", CHAMPION_URI, "--top", "2", "zero.png"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    by_file = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", "--model", str(checkpoint), "--top", "2", "zero.png"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert by_uri.returncode == 0, by_uri.stderr
    # Which model, and no progress bars or warnings around the answer.
    assert by_uri.stderr == f"predict: model {CHAMPION_URI} (version 1, mlp, test accuracy not known)\n"
    assert re.fullmatch(r"zero\.png: \d \(\d\.\d\d\), \d \(\d\.\d\d\)\n", by_uri.stdout)
    assert by_uri.stdout == by_file.stdout


def test_predict_names_a_model_uri_it_cannot_load(champion, tmp_path):
    uri, _, _ = champion
    env = clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", "--model-uri", "models:/mnist-mlp@nobody", "any.png"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert re.fullmatch(r"error: models:/mnist-mlp@nobody: cannot load this MLflow model \(.*\)\n", done.stderr)
