"""The model people touch is the best one: predict, `make serve` and the demo take the tracking store's
champion when there is one, else models/model.pt, and each says which, with its version, kind and
test accuracy. Real SQLite stores, real processes."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from PIL import Image, ImageDraw

from mnist_pipeline.tracking import registry

from support.digits import exported
from support.local_servers import stop
from support.scoring import CHAMPION_URI, NAME, check_answer, inputs, post, start_serving, strokes
from support.tools import REPO, clean_env

pytestmark = pytest.mark.slow


@pytest.fixture
def folder(tmp_path, untrained_model) -> Path:
    """A project folder as `dvc pull` leaves it: models/model.pt, no store; and an image to read."""
    (tmp_path / "models").mkdir()
    shutil.copy(untrained_model, tmp_path / "models" / "model.pt")
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill="black", width=14)
    image.save(tmp_path / "one.png")
    return tmp_path


def with_store(folder: Path, checkpoint: Path, test_accuracy: float | None, name: str = NAME) -> None:
    """mlflow.db in `folder`; with a test accuracy, `checkpoint` logged and registered as the pipeline
    does (tracking.register: the tag and the champion alias) under `name`, else only an experiment."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment(NAME, artifact_location=(folder / "mlruns").as_uri())
        if test_accuracy is not None:
            with mlflow.start_run(experiment_id=experiment):
                model_uri = registry.log_model(checkpoint, exported(checkpoint), strokes())
            assert registry.register(name, model_uri, test_accuracy, "mnist") == ("1", True)
    finally:
        mlflow.set_tracking_uri(previous)


def predict(folder: Path, *options: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.predict", *options, "one.png"],
        cwd=folder,
        env=clean_env(PYTHONPATH=str(REPO / "src")),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("one.png: ")
    return done


def test_without_a_store_the_checkpoint_and_no_store_made(folder):
    assert predict(folder).stderr == "predict: model models/model.pt (mlp, test accuracy not known)\n"
    assert not (folder / "mlflow.db").exists()


def test_the_checkpoints_accuracy_is_the_evaluation_dvc_lock_ties_to_it(folder):
    (folder / "metrics").mkdir()
    (folder / "metrics" / "eval.json").write_text(json.dumps({"test_accuracy": 0.9147}))
    md5 = {
        path: hashlib.md5((folder / path).read_bytes()).hexdigest() for path in ("models/model.pt", "metrics/eval.json")
    }
    lock = {
        "stages": {
            "evaluate": {
                "deps": [{"path": "models/model.pt", "md5": md5["models/model.pt"]}],
                "outs": [{"path": "metrics/eval.json", "md5": md5["metrics/eval.json"]}],
            }
        }
    }
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    said = "predict: model models/model.pt (mlp, test accuracy 91.47% (metrics/eval.json))\n"
    assert predict(folder).stderr == said
    (folder / "metrics" / "eval.json").write_text(json.dumps({"test_accuracy": 0.99}))  # another model's
    assert predict(folder).stderr == "predict: model models/model.pt (mlp, test accuracy not known)\n"


def test_the_champion_when_the_store_has_one_and_the_options_still_choose(folder, untrained_model):
    with_store(folder, untrained_model, 0.9123)
    said = f"predict: model {CHAMPION_URI} (version 1, mlp, test accuracy 91.23%)\n"
    assert predict(folder).stderr == said
    assert predict(folder, "--model", "models/model.pt").stderr.startswith("predict: model models/model.pt (mlp")
    assert predict(folder, "--model-uri", f"models:/{NAME}/1").stderr.startswith(
        f"predict: model models:/{NAME}/1 (version 1,"
    )


def test_the_champion_of_the_model_params_yaml_names(folder, untrained_model):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tracking"]["registered_model"] = "digits"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    with_store(folder, untrained_model, 0.9321, name="digits")
    assert predict(folder).stderr == "predict: model models:/digits@champion (version 1, mlp, test accuracy 93.21%)\n"


def test_a_store_without_a_champion_leaves_the_checkpoint(folder, untrained_model):
    with_store(folder, untrained_model, None)
    assert predict(folder).stderr == "predict: model models/model.pt (mlp, test accuracy not known)\n"


def test_serve_without_a_champion_serves_models_model_pt(folder):
    url, server, log = start_serving(folder, clean_env(PYTHONPATH=str(REPO / "src")))
    try:
        assert log.read_text().startswith("serve: model models/model.pt (mlp, test accuracy not known) on ")
        status, answer = post(url, inputs(strokes()))
        assert status == 200
        check_answer(answer, 3)
    finally:
        stop(server)
