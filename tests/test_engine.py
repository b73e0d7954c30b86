"""The loop: learns, is deterministic, stops on divergence, and resumes to the same result."""

import dataclasses

import pytest
import torch

from mnist_pipeline import engine, resume
from mnist_pipeline.data import load_split
from mnist_pipeline.errors import DivergenceError

from conftest import MNIST_MIRROR, train_in_process

CPU = torch.device("cpu")


def test_training_learns_the_synthetic_digits(params, tiny_mnist):
    records, _ = train_in_process(params, tiny_mnist)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert set(records[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["test_accuracy"] > 0.5  # chance is 0.1


def test_same_seed_same_numbers_other_seed_others(params, tiny_mnist):
    first, _ = train_in_process(params, tiny_mnist)
    again, _ = train_in_process(params, tiny_mnist)
    other, _ = train_in_process(dataclasses.replace(params, seed=1), tiny_mnist)
    assert first == again
    assert first != other


def test_adamw_with_onecycle_runs(params, tiny_mnist):
    tuned = dataclasses.replace(params, train=dataclasses.replace(
        params.train, optimizer="adamw", schedule="onecycle", lr=0.01, weight_decay=0.01))
    records, training = train_in_process(tuned, tiny_mnist)
    assert records[-1]["test_accuracy"] > 0.9
    assert training.scheduler.get_last_lr()[0] < 1e-4  # annealed to near zero by the last step


def test_divergence_stops_with_epoch_and_batch(params, tiny_mnist):
    wild = dataclasses.replace(params, train=dataclasses.replace(params.train, lr=1e6))
    with pytest.raises(DivergenceError, match=r"epoch 1: training loss became (nan|inf) at batch \d+; lower train.lr"):
        train_in_process(wild, tiny_mnist)


def test_resume_gives_the_uninterrupted_result(params, tiny_mnist, tmp_path):
    straight, straight_training = train_in_process(params, tiny_mnist)

    # Interrupted after epoch 1: the state saved then is all a new process has.
    train, test = load_split(tiny_mnist, train=True), load_split(tiny_mnist, train=False)
    training = engine.Training.create(params, len(train), CPU)
    first = next(engine.fit(training, train, test, params.train))
    key = resume.fingerprint(params, tiny_mnist)
    resume.save(tmp_path / "state.pt", key, "run-1", [first], training)

    fresh = engine.Training.create(dataclasses.replace(params, seed=99), len(train), CPU)  # state overrides all
    history, run_id = resume.restore(tmp_path / "state.pt", key, fresh)
    rest, _ = train_in_process(params, tiny_mnist, first_epoch=2, training=fresh)
    assert run_id == "run-1" and history + rest == straight
    for name, tensor in straight_training.model.state_dict().items():
        assert torch.equal(tensor, fresh.model.state_dict()[name])


def test_resume_ignores_state_of_other_params(params, tiny_mnist, tmp_path):
    training = engine.Training.create(params, 512, CPU)
    resume.save(tmp_path / "state.pt", resume.fingerprint(params, tiny_mnist), "run-1", [], training)
    other = dataclasses.replace(params, train=dataclasses.replace(params.train, lr=0.05))
    assert resume.restore(tmp_path / "state.pt", resume.fingerprint(other, tiny_mnist), training) is None
    # Tracking names and the resume switch itself do not change what is computed.
    renamed = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, experiment="x"))
    assert resume.fingerprint(renamed, tiny_mnist) == resume.fingerprint(params, tiny_mnist)


def test_confusion_matrix_and_per_class():
    labels = torch.tensor([0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 1])
    matrix = engine.confusion_matrix(labels, predicted)
    assert matrix[0].tolist()[:3] == [1, 1, 0] and matrix[1].tolist()[:3] == [0, 2, 0]
    assert matrix[2].tolist()[:3] == [0, 1, 0] and matrix.sum() == 5
    report = engine.per_class(matrix)
    assert report["0"] == {"precision": 1.0, "recall": 0.5}
    assert report["1"] == {"precision": 0.5, "recall": 1.0}
    assert report["2"] == {"precision": 0.0, "recall": 0.0}  # never predicted
    assert report["9"] == {"precision": 0.0, "recall": 0.0}  # never present


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_MIRROR, reason="needs MNIST_MIRROR (real MNIST files)")
def test_real_mnist_three_epochs_at_lr_0_1(params):
    fast = dataclasses.replace(params, model=dataclasses.replace(params.model, hidden=(128, 64)),
                               train=dataclasses.replace(params.train, lr=0.1, batch_size=64, epochs=3))
    records, _ = train_in_process(fast, MNIST_MIRROR)
    assert records[-1]["test_accuracy"] >= 0.95, records
