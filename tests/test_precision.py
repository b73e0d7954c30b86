"""train.precision: bf16 steps where the device has native bf16, with the weights and the optimizer in
fp32; fp32 elsewhere, said by the train stage; every precision reruns to the same bytes."""

import dataclasses
import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from mnist_pipeline.config import load_params
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.files import rounded
from mnist_pipeline.stages import train as train_stage
from mnist_pipeline.training import device, engine, scoring

from support.synthetic import write_synthetic_mnist
from support.tiny import TRAIN_ARGS, augmented, train_in_process, write_tiny_params

CPU = torch.device("cpu")
NATIVE = device.native_bf16(CPU)


def cnn(params, precision: str):
    """A small CNN with everything the recipes use: AdamW on a one-cycle schedule, dropout, label
    smoothing and every random distortion, in `precision`, for 2 epochs."""
    model = dataclasses.replace(params.model, kind="cnn", channels=(4, 8), hidden=(16,), dropout=0.1)
    train = dataclasses.replace(
        params.train, optimizer="adamw", schedule="onecycle", lr=0.01, label_smoothing=0.1, epochs=2
    )
    return augmented(dataclasses.replace(params, model=model, train=dataclasses.replace(train, precision=precision)))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reruns_give_the_same_bytes_in_every_precision(params, tmp_path, precision):
    data = write_synthetic_mnist(tmp_path / "mnist", 128, 64)
    p = cnn(params, precision)
    first, a = train_in_process(p, data)
    again, b = train_in_process(p, data)
    assert a.precision == ("bf16" if precision == "bf16" and NATIVE else "fp32")
    assert first == again
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, y), name
    assert first[-1]["train_loss"] < first[0]["train_loss"]
    # Each epoch is scored in the precision it trained in (the saved model's report is fp32's).
    test = load_split(data, train=False)
    assert first[-1]["test_loss"] == scoring.evaluate(a.model, test, "test", a.precision)["test_loss"]


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16")
def test_bf16_computes_the_step_in_bf16_and_keeps_weights_gradients_and_optimizer_in_fp32(params, tiny_mnist):
    batch = load_split(tiny_mnist, train=True).head(32)
    logits = {}
    for precision in ("fp32", "bf16"):
        p = cnn(params, precision)
        training = engine.Training.create(p, 512, CPU)
        _, logits[precision] = engine.make_step(training, p.train)(batch.images, batch.labels)
        state = training.optimizer.state_dict()["state"].values()
        tensors = [*training.model.parameters(), *(g.grad for g in training.model.parameters())]
        tensors += [t for s in state for t in s.values() if t.dim()]
        assert {t.dtype for t in tensors} == {torch.float32}, precision
    assert logits["fp32"].dtype == torch.float32 and logits["bf16"].dtype == torch.bfloat16


def test_without_native_bf16_the_stage_trains_in_fp32_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setattr(device, "native_bf16", lambda where: False)
    write_synthetic_mnist(tmp_path / "data", 512, 256)
    write_tiny_params(tmp_path / "params.yaml", epochs=2, batch_size=32, lr=0.1, precision="bf16")
    assert train_stage.main(TRAIN_ARGS) == 0
    out = capsys.readouterr().out
    assert "train: note: train.precision is bf16, but this CPU has no native bf16: training in fp32" in out
    [run] = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("mnist-mlp").experiment_id])
    assert run.data.tags["precision"] == "fp32" and run.data.params["train.precision"] == "bf16"
    params = load_params(tmp_path / "params.yaml")
    fp32 = dataclasses.replace(params, train=dataclasses.replace(params.train, precision="fp32"))
    records, _ = train_in_process(fp32, tmp_path / "data")
    assert json.loads((tmp_path / "metrics" / "history.json").read_text()) == [rounded(r) for r in records]
