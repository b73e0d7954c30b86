"""The loop: learns, shuffles afresh each epoch, honours every training option, resumes to the same result."""

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from mnist_pipeline.data import splits as raw
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.errors import DivergenceError
from mnist_pipeline.evaluation import report
from mnist_pipeline.training import engine, resume

from support.synthetic import write_synthetic_mnist
from support.tiny import augmented, train_in_process
from support.tools import MNIST_MIRROR

CPU = torch.device("cpu")


def with_train(params, **changes):
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **changes))


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


def epoch_orders(params, data_dir, epochs=3) -> list[torch.Tensor]:
    """The order in which fit visits the training images, epoch by epoch."""
    train, test = load_split(data_dir, train=True), load_split(data_dir, train=False)
    training = engine.Training.create(params, len(train), CPU)
    orders = []

    def seen(batches, epoch):
        batches = list(batches)
        orders.append(torch.cat(batches))
        return batches

    for _ in engine.fit(training, train, test, with_train(params, epochs=epochs).train, split="test", progress=seen):
        pass
    return orders


def test_every_epoch_visits_every_image_once_in_a_fresh_seeded_order(params, tiny_mnist):
    orders = epoch_orders(params, tiny_mnist)
    n = len(load_split(tiny_mnist, train=True))
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(n))  # a permutation: each image once
        assert not torch.equal(order, torch.arange(n))  # shuffled
    assert len({tuple(o.tolist()) for o in orders}) == len(orders)  # a new order every epoch
    assert all(torch.equal(a, b) for a, b in zip(orders, epoch_orders(params, tiny_mnist), strict=True))  # seeded
    other_seed = epoch_orders(dataclasses.replace(params, seed=1), tiny_mnist)
    assert not torch.equal(orders[0], other_seed[0])


def one_step_loss(params, images, labels) -> tuple[torch.Tensor, torch.nn.Module]:
    """The loss of the first training step under `params`, and the model as it was before it."""
    training = engine.Training.create(params, len(labels), CPU)
    before = copy.deepcopy(training.model)
    loss, _ = engine.make_step(training, params.train)(images, labels)
    return loss, before


def test_label_smoothing_reaches_the_loss(params, tiny_mnist):
    batch = load_split(tiny_mnist, train=True).head(32)
    smoothed = with_train(params, label_smoothing=0.2)
    loss, model = one_step_loss(smoothed, batch.images, batch.labels)
    expected = F.cross_entropy(model(batch.images), batch.labels, label_smoothing=0.2)
    assert torch.allclose(loss, expected) and not torch.allclose(
        loss, F.cross_entropy(model(batch.images), batch.labels)
    )


@pytest.mark.parametrize(("optimizer", "cls"), [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_momentum_and_weight_decay_reach_the_optimiser(params, optimizer, cls):
    cfg = with_train(
        params, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0, weight_decay=0.05, lr=0.02
    )
    training = engine.Training.create(cfg, 512, CPU)
    assert type(training.optimizer) is cls
    group = training.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.02, 0.05)
    if optimizer == "sgd":
        assert group["momentum"] == 0.9


def test_weight_decay_and_momentum_change_the_weights(params, tiny_mnist):
    batch = load_split(tiny_mnist, train=True).head(32)

    def weights_after_two_steps(p):
        training = engine.Training.create(p, 512, CPU)
        step = engine.make_step(training, p.train)
        step(batch.images, batch.labels)
        step(batch.images, batch.labels)
        return torch.cat([w.flatten() for w in training.model.parameters()])

    plain = weights_after_two_steps(params)
    assert not torch.equal(plain, weights_after_two_steps(with_train(params, weight_decay=0.1)))
    assert not torch.equal(plain, weights_after_two_steps(with_train(params, momentum=0.9)))
    adamw = with_train(params, optimizer="adamw", lr=0.01)
    assert not torch.equal(weights_after_two_steps(adamw), weights_after_two_steps(with_train(adamw, weight_decay=0.5)))


def test_adamw_with_onecycle_runs(params, tiny_mnist):
    tuned = with_train(params, optimizer="adamw", schedule="onecycle", lr=0.01, weight_decay=0.01)
    records, training = train_in_process(tuned, tiny_mnist)
    assert records[-1]["test_accuracy"] > 0.9
    assert training.scheduler.get_last_lr()[0] < 1e-4  # annealed to near zero by the last step


def test_divergence_stops_with_epoch_and_batch(params, tiny_mnist):
    with pytest.raises(DivergenceError, match=r"epoch 1: training loss became (nan|inf) at batch \d+; lower train.lr"):
        train_in_process(with_train(params, lr=1e6), tiny_mnist)


@pytest.mark.parametrize("augment", [False, True])
def test_resume_gives_the_uninterrupted_result(params, tiny_mnist, tmp_path, augment):
    params = augmented(params) if augment else params
    straight, straight_training = train_in_process(params, tiny_mnist)

    # Interrupted after epoch 1: the state saved then is all a new process has.
    train, test = load_split(tiny_mnist, train=True), load_split(tiny_mnist, train=False)
    training = engine.Training.create(params, len(train), CPU)
    first = next(engine.fit(training, train, test, params.train, split="test"))
    key = resume.fingerprint(params, raw.fingerprint(raw.checksums(tiny_mnist)), "cpu")
    resume.ResumeState(tmp_path / "state.pt", key, enabled=True).save("run-1", [first], training)

    fresh = engine.Training.create(dataclasses.replace(params, seed=99), len(train), CPU)  # state overrides all
    history, run_id = resume.ResumeState(tmp_path / "state.pt", key, enabled=True).restore(fresh)
    rest, _ = train_in_process(params, tiny_mnist, first_epoch=2, training=fresh)
    assert run_id == "run-1" and history + rest == straight
    for name, tensor in straight_training.model.state_dict().items():
        assert torch.equal(tensor, fresh.model.state_dict()[name])


@pytest.fixture
def saved_state(params, tiny_mnist, tmp_path):
    """A state file saved by a run of `params` on `tiny_mnist`; restore(p, folder) tries it for other runs."""
    training = engine.Training.create(params, 512, CPU)
    path = tmp_path / "state.pt"
    key = resume.fingerprint(params, raw.fingerprint(raw.checksums(tiny_mnist)), "cpu")
    resume.ResumeState(path, key, enabled=True).save("run-1", [], training)

    def restore(other_params, data_dir=tiny_mnist):
        key = resume.fingerprint(other_params, raw.fingerprint(raw.checksums(data_dir)), "cpu")
        return resume.ResumeState(path, key, enabled=True).restore(engine.Training.create(other_params, 512, CPU))

    return restore


@pytest.mark.parametrize(
    "change",
    [
        lambda p: with_train(p, lr=0.05),
        lambda p: with_train(p, batch_size=16),
        lambda p: with_train(p, label_smoothing=0.1),
        lambda p: dataclasses.replace(p, seed=1),
        lambda p: dataclasses.replace(p, model=dataclasses.replace(p.model, hidden=(16,))),
        lambda p: dataclasses.replace(p, data=dataclasses.replace(p.data, dataset="fashion-mnist")),
        lambda p: augmented(p, rotation=10),
    ],
)
def test_resume_state_is_thrown_away_when_a_result_param_changes(params, saved_state, change):
    assert saved_state(params) is not None
    assert saved_state(change(params)) is None


def test_resume_state_is_thrown_away_when_the_raw_data_changes(params, saved_state, tmp_path):
    other = write_synthetic_mnist(tmp_path / "other", n_train=512, n_test=128)  # same names, other bytes
    assert saved_state(params, other) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda p: dataclasses.replace(
            p, tracking=dataclasses.replace(p.tracking, experiment="x", registered_model="y")
        ),
        lambda p: with_train(p, resume=False),
    ],
)
def test_resume_state_is_kept_when_only_tracking_or_the_resume_switch_change(params, saved_state, change):
    assert resume.fingerprint(change(params), "d", "cpu") == resume.fingerprint(params, "d", "cpu")
    assert saved_state(with_train(change(params), resume=True)) == ([], "run-1")


def test_resume_state_is_thrown_away_on_another_device(params, tiny_mnist):
    # The CPU's hand-written step and CUDA's autograd step round differently: no resuming across them.
    digest = raw.fingerprint(raw.checksums(tiny_mnist))
    assert resume.fingerprint(params, digest, "cuda") != resume.fingerprint(params, digest, "cpu")


def test_a_state_of_the_hand_written_step_loads_into_a_training_with_an_optimizer(params, tiny_mnist):
    # The hand-written step (no optimizer object) saved it; autograd's step (as on CUDA) takes it up.
    train, test = load_split(tiny_mnist, train=True), load_split(tiny_mnist, train=False)
    fast = engine.Training.create(params, len(train), CPU)
    assert fast.optimizer is None
    first = next(engine.fit(fast, train, test, params.train, split="test"))
    autograd = engine.Training(copy.deepcopy(fast.model), None, None, torch.Generator(), torch.Generator(), "fp32")
    autograd.optimizer = engine.make_optimizer(autograd.model, params.train)
    autograd.load_state_dict(fast.state_dict())
    second = next(engine.fit(autograd, train, test, params.train, split="test", first_epoch=2))
    expected = next(engine.fit(fast, train, test, params.train, split="test", first_epoch=2))
    assert first["epoch"] == 1 and second == expected


def test_resume_off_neither_saves_nor_restores(params, tiny_mnist, tmp_path):
    training = engine.Training.create(params, 512, CPU)
    key = resume.fingerprint(params, raw.fingerprint(raw.checksums(tiny_mnist)), "cpu")
    off = resume.ResumeState(tmp_path / "state.pt", key, enabled=False)
    off.save("run-1", [{"epoch": 1}], training)
    assert not (tmp_path / "state.pt").exists()
    resume.ResumeState(tmp_path / "state.pt", key, enabled=True).save("run-1", [{"epoch": 1}], training)
    assert off.restore(training) is None  # a matching file is there, and ignored


def test_confusion_matrix_and_per_class():
    labels = torch.tensor([0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 1])
    matrix = report.confusion_matrix(labels, predicted)
    assert matrix[0].tolist()[:3] == [1, 1, 0] and matrix[1].tolist()[:3] == [0, 2, 0]
    assert matrix[2].tolist()[:3] == [0, 1, 0] and matrix.sum() == 5
    per_class = report.per_class(matrix, [f"c{i}" for i in range(10)])
    assert per_class["c0"] == {"precision": 1.0, "recall": 0.5}
    assert per_class["c1"] == {"precision": 0.5, "recall": 1.0}
    assert per_class["c2"] == {"precision": 0.0, "recall": 0.0}  # never predicted
    assert per_class["c9"] == {"precision": 0.0, "recall": 0.0}  # never present


@pytest.mark.real_data
@pytest.mark.skipif(not MNIST_MIRROR, reason="needs MNIST_MIRROR (real MNIST files)")
def test_real_mnist_three_epochs_at_lr_0_1(params):
    fast = dataclasses.replace(
        with_train(params, lr=0.1, batch_size=64, epochs=3), model=dataclasses.replace(params.model, hidden=(128, 64))
    )
    records, _ = train_in_process(fast, MNIST_MIRROR)
    assert records[-1]["test_accuracy"] >= 0.95, records
