"""The train stage honours train.resume: off, an interrupted run's state is ignored and training starts afresh."""

import json

import yaml
from mlflow.tracking import MlflowClient

from mnist_pipeline.config import load_params
from mnist_pipeline.files import rounded
from mnist_pipeline.stages import train as train_stage
from mnist_pipeline.training import resume

from support.synthetic import write_synthetic_mnist
from support.tiny import TRAIN_ARGS, train_in_process, write_tiny_params


def test_with_resume_off_an_interrupted_runs_state_is_not_taken_up(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_synthetic_mnist(tmp_path / "data", 512, 256)
    write_tiny_params(tmp_path / "params.yaml", epochs=3, batch_size=32, lr=0.1, resume=True)

    save = resume.ResumeState.save

    def save_then_interrupt(self, *args, **kwargs):  # Ctrl-C right after epoch 1's state is saved
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume.ResumeState, "save", save_then_interrupt)
    assert train_stage.main(TRAIN_ARGS) == 130
    assert (tmp_path / "models" / "train_state.pt").exists()
    monkeypatch.setattr(resume.ResumeState, "save", save)

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["train"]["resume"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    assert train_stage.main(TRAIN_ARGS) == 0
    out = capsys.readouterr().out
    assert "resuming" not in out and "epoch: 1," in out  # from the first epoch
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]  # a new run, not the interrupted one
    records, _ = train_in_process(load_params(tmp_path / "params.yaml"), tmp_path / "data")
    assert json.loads((tmp_path / "metrics" / "history.json").read_text()) == [rounded(r) for r in records]
