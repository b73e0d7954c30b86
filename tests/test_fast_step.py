"""The hand-written step gives the autograd step's weights bit for bit, and is used only where it can."""

import dataclasses

import pytest
import torch

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.training import engine, steps
from mnist_pipeline.training.model import MLP

CPU = torch.device("cpu")


def article(params, **train):
    """The article's network and optimiser, on the tiny data."""
    model = dataclasses.replace(params.model, hidden=(128, 64))
    return dataclasses.replace(
        params,
        model=model,
        train=dataclasses.replace(params.train, lr=0.001, batch_size=64, optimizer="sgd", momentum=0.0, **train),
    )


def one_epoch(params, data, step_kind: str) -> engine.Training:
    training = engine.Training.create(params, len(data), CPU)
    if step_kind == "fast":
        assert isinstance(training.model, MLP)
        step = steps.sgd_step(training.model, params.train.lr, params.train.weight_decay)
    else:
        optimizer = engine.make_optimizer(training.model, params.train)  # torch.optim.SGD, as the article's loop
        step = steps.autograd_step(training.model, optimizer, None, 0.0)
    batches = engine.shuffled_batches(len(data), params.train.batch_size, training.generator, CPU)
    engine.train_one_epoch(step, data, batches)
    return training


@pytest.mark.parametrize("variant", [{}, {"weight_decay": 0.01}, {"normalize": True}])
def test_fast_step_is_bit_identical_to_autograd_after_one_epoch(params, tiny_mnist, variant):
    p = article(params, **{k: v for k, v in variant.items() if k != "normalize"})
    if "normalize" in variant:
        p = dataclasses.replace(p, model=dataclasses.replace(p.model, normalize=True))
    data = load_split(tiny_mnist, train=True)
    fast, slow = one_epoch(p, data, "fast"), one_epoch(p, data, "autograd")
    for (name, a), b in zip(fast.model.state_dict().items(), slow.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fresh = engine.Training.create(p, len(data), CPU)
    assert not torch.equal(fast.model.layers[0].weight, fresh.model.layers[0].weight)


def test_training_takes_the_fast_step_exactly_where_it_covers_the_run(params):
    def step_kind(p) -> str:
        step = engine.make_step(engine.Training.create(p, 512, CPU), p.train)
        return repr(step).split()[1].split(".")[0]  # <function sgd_step.<locals>.step at 0x...>

    assert step_kind(article(params)) == "sgd_step"
    assert step_kind(article(params, weight_decay=0.01)) == "sgd_step"
    changes = ({"momentum": 0.9}, {"label_smoothing": 0.1}, {"schedule": "onecycle"}, {"optimizer": "adamw"})
    for change in (*changes, {"precision": "bf16"}):
        p = dataclasses.replace(params, train=dataclasses.replace(article(params).train, **change))
        assert step_kind(p) == "autograd_step", change
