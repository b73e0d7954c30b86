"""The logged MLflow model, served as `make serve` does: MLflow's own scoring server, real HTTP requests.

The model is logged by tracking.registry.log_model into a temporary SQLite store, registered as
mnist-mlp@champion, and served from that URI by `mlflow models serve --env-manager local`.
Where real MNIST is available (MNIST_MIRROR) it is the session's trained model, else random
weights: the form of the answers is the same, only the real-digit test needs the trained one.
"""

import base64
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

from mnist_pipeline.serving import inference
from mnist_pipeline.tracking import registry

from support.digits import as_scanned, exported
from support.local_servers import stop
from support.scoring import (
    CHAMPION_URI,
    LOOPBACK,
    NAME,
    check_answer,
    images_table,
    inputs,
    post,
    start_serving,
    strokes,
)
from support.tools import MNIST_MIRROR, REPO, clean_env

pytestmark = pytest.mark.slow


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
        model_uri = registry.log_model(checkpoint, exported(checkpoint), strokes())
    version = mlflow.register_model(model_uri, NAME).version
    MlflowClient(uri).set_registered_model_alias(NAME, "champion", version)
    yield uri, root, checkpoint
    mlflow.set_tracking_uri(previous)  # the process-wide URI: no other test may inherit this store


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
            r"pixels must have the shape \(N, 1, 28, 28\), N at least 1; got \(2, 28, 28\)",
        ),
        (json.dumps({"inputs": [[["a"]]]}).encode(), "application/json", "pixel values must be numbers"),
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


@pytest.fixture(scope="module")
def scans(request, tmp_path_factory) -> list[Path]:
    """Digits as files from a scanner or a phone, PNG and JPEG: 20 real test digits made to look scanned
    where MNIST_MIRROR is set, else a 1, a 0 and a 7 drawn with a pen."""
    folder = tmp_path_factory.mktemp("scans")
    if MNIST_MIRROR:
        digits, _ = request.getfixturevalue("real_digits")
        pages = [
            as_scanned(d, seed, dark_ink=seed % 2 == 0, colour=seed % 3 == 0) for seed, d in enumerate(digits[::5])
        ]
    else:
        pages = [Image.fromarray((255 - image[0] * 255).astype(np.uint8)).resize((120, 120)) for image in strokes()]
    files = [folder / f"{n}.{'jpg' if n % 2 else 'png'}" for n in range(len(pages))]
    for page, path in zip(pages, files, strict=True):
        page.save(path)
    return files


def test_a_scanned_digit_gets_the_same_answer_over_http_as_from_predict(scoring_server, champion, scans):
    uri, _, _ = champion
    status, answer = post(scoring_server, images_table(scans))
    assert status == 200, answer
    classes = check_answer(answer, len(scans))
    over_http = "".join(
        f"{path.name}: {c} ({each['probabilities'][c]:.2f})\n"
        for path, c, each in zip(scans, classes, answer["predictions"], strict=True)
    )
    predict = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", *(path.name for path in scans)],
        cwd=scans[0].parent,
        env=clean_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO / "src")),
        capture_output=True,
        text=True,
    )
    assert predict.returncode == 0, predict.stderr
    assert predict.stdout == over_http


def nan_pixel() -> bytes:
    pixels = np.zeros((1, 1, 28, 28)).tolist()
    pixels[0][0][5][5] = float("nan")  # JSON's NaN, which Python's json (and MLflow's) reads
    return json.dumps({"inputs": pixels}).encode()


def table(*cells: str) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[c] for c in cells]}}).encode()


PNG = (REPO / "docs" / "demo.png").read_bytes()


@pytest.mark.parametrize(
    "body, message",
    [
        (inputs(strokes() * 1e30), r"pixel values must be in \[0, 1\] \(MNIST-prepared\); found 1e\+30"),
        (inputs(strokes() - 0.5), r"pixel values must be in \[0, 1\] \(MNIST-prepared\); found -0.5"),
        (nan_pixel(), r"pixel values must be finite; found nan"),
        (table(base64.b64encode(b"GIF89a, or any other bytes").decode()), r"image 1 of 1: not a PNG or JPEG image"),
        (table(base64.b64encode(PNG[: len(PNG) // 2]).decode()), r"image 1 of 1: not a readable image"),
        (table(base64.b64encode(PNG).decode(), "%%% not base64"), r"image 2 of 2: not valid base64"),
        (b" " * (4 * 2**20 + 1), r"^request body over 4,194,304 bytes: send fewer or smaller images$"),
    ],
    ids=["huge", "negative", "nan", "not-an-image", "truncated", "not-base64", "too-large"],
)
def test_bad_pixels_and_images_get_400_with_one_message_and_serving_goes_on(scoring_server, body, message):
    status, answer = post(scoring_server, body)
    assert status == 400
    assert set(answer) <= {"error_code", "message", "sqlstate", "error_class"}  # no stack trace
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert re.search(message, answer["message"]) and len(answer["message"]) < 600, answer["message"]
    status, answer = post(scoring_server, inputs(strokes()))
    assert status == 200 and check_answer(answer, 3)


def test_serve_on_onnx_answers_as_on_pytorch(scoring_server, champion, scans):
    _, root, _ = champion
    url, server, log = start_serving(root, clean_env(PYTHONPATH=str(REPO / "src")), "--runtime", "onnx")
    try:
        assert log.read_text().startswith(f"serve: model {CHAMPION_URI} (version 1, mlp, onnxruntime, ")
        for body in (inputs(strokes()), images_table(scans)):
            (torch_status, on_torch), (onnx_status, on_onnx) = post(scoring_server, body), post(url, body)
            assert torch_status == onnx_status == 200
            assert [a["class"] for a in on_onnx["predictions"]] == [a["class"] for a in on_torch["predictions"]]
            np.testing.assert_allclose(
                [a["probabilities"] for a in on_onnx["predictions"]],
                [a["probabilities"] for a in on_torch["predictions"]],
                atol=1e-5,
            )
    finally:
        stop(server)


def test_logged_model_declares_its_input_output_and_pins(champion):
    uri, _, _ = champion
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(CHAMPION_URI)
    assert info.signature.inputs is None  # pixels or images: the model checks them itself
    assert info.signature.outputs.to_dict() == [
        {"type": "long", "name": "class", "required": True},
        {"type": "array", "items": {"type": "double"}, "name": "probabilities", "required": True},
    ]
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI))
    pins = (local / "requirements.txt").read_text().split()
    assert [p.split("==")[0] for p in pins] == ["torch", "numpy", "pandas", "mlflow", "pillow", "onnxruntime"]
    assert all(re.fullmatch(r"[a-z]+==\d+\.\d+\.\d+", p) for p in pins), pins
    assert (local / "artifacts" / "model.pt").is_file() and (local / "artifacts" / "model.onnx").is_file()

    answer = inference.load_pyfunc(CHAMPION_URI).predict(strokes())  # mlflow.pyfunc's, sys.path kept
    assert [list(a) for a in answer] == [["class", "probabilities"]] * 3 and isinstance(answer[0]["class"], int)


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


# The last commit before the package was grouped by concern: its served_model.py imports
# mnist_pipeline.inference and mnist_pipeline.model, the paths such models still need.
FLAT_LAYOUT = "ef204f5"


@pytest.fixture(scope="module")
def model_logged_before_the_layout(untrained_model, tmp_path_factory) -> Path:
    """An MLflow model saved by the package as it was at FLAT_LAYOUT (from git), as a store keeps it."""
    old = tmp_path_factory.mktemp("flat-layout")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", FLAT_LAYOUT, "src/mnist_pipeline"], capture_output=True
    )
    if archive.returncode != 0:
        pytest.skip(f"needs the git history: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    folder = old / "model"
    save = (
        "import sys; from pathlib import Path; from mnist_pipeline.tracking.registry import save_model; "
        "save_model(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    env = clean_env(PYTHONPATH=str(old / "src"))
    subprocess.run([sys.executable, "-c", save, str(untrained_model), str(folder)], env=env, check=True, cwd=old)
    assert "from mnist_pipeline.inference import probabilities" in (folder / "served_model.py").read_text()
    return folder


def test_a_model_logged_before_the_layout_still_loads_and_serves(model_logged_before_the_layout, tmp_path):
    folder = model_logged_before_the_layout
    # In this process, beside today's package: predict, the demo and serve's own check load it so.
    expected = inference.from_checkpoint(folder / "artifacts" / "model.pt").predict(strokes())
    path = list(sys.path)
    loaded = inference.from_mlflow(str(folder))
    assert sys.path == path  # else a process spawned later from here imports the model's old package
    np.testing.assert_allclose(loaded.predict(strokes()), expected, atol=1e-6)
    # In MLflow's scoring server, as `make serve --model-uri` serves it.
    url, server, _ = start_serving(tmp_path, clean_env(PYTHONPATH=str(REPO / "src")), "--model-uri", str(folder))
    try:
        status, answer = post(url, inputs(strokes()))
        assert status == 200, answer
        assert check_answer(answer, 3) == expected.argmax(1).tolist()
    finally:
        stop(server)
