"""The training state, and the loops that train and score on preloaded tensors: plain dicts out, no I/O or MLflow."""

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnist_pipeline.config import AugmentConfig, Params, TrainConfig
from mnist_pipeline.data.catalog import IMAGE_SHAPE
from mnist_pipeline.data.splits import Split
from mnist_pipeline.errors import DivergenceError
from mnist_pipeline.training import augment, scoring, steps
from mnist_pipeline.training import device as compute
from mnist_pipeline.training.distributed import World
from mnist_pipeline.training.model import MLP, build
from mnist_pipeline.training.steps import Scheduler


@dataclass
class Training:
    """Everything that changes while training: saving its state is enough to resume bit for bit."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None  # None: the hand-written step updates the weights itself
    scheduler: Scheduler | None
    generator: torch.Generator  # draws each epoch's shuffle
    augment_generator: torch.Generator  # draws the training batches' distortions (train.augment)
    precision: str  # what the steps compute in: train.precision where the device has it (device.precision)

    @classmethod
    def create(cls, params: Params, n_train: int, device: torch.device, processes: int = 1) -> "Training":
        """A fresh, seeded run: same params, same initial weights and the same shuffles."""
        torch.manual_seed(params.seed)
        model = build(params.model).to(device)
        generator = torch.Generator().manual_seed(params.seed)
        augment_generator = torch.Generator().manual_seed(params.seed + augment.SEED_OFFSET)
        precision = compute.precision(params.train.precision, device)
        # The hand-written step stays exact with augmentation: the distortion happens before the step.
        if processes == 1 and steps.covers(model, params.train):
            # No optimizer object: making the first one imports torch's compiler (1.2 s here).
            return cls(model, None, None, generator, augment_generator, precision)
        optimizer = make_optimizer(model, params.train)
        scheduler = make_scheduler(optimizer, params.train, math.ceil(n_train / params.train.batch_size))
        return cls(model, optimizer, scheduler, generator, augment_generator, precision)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "generator": self.generator.get_state(),
            "augment_generator": self.augment_generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout's draws
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        # A state without an optimizer's comes from the hand-written step: plain SGD, which keeps
        # no state and no schedule, so an optimizer made for the same params starts as it would.
        if self.optimizer and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.augment_generator.set_state(state["augment_generator"])
        torch.set_rng_state(state["torch_rng"])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        # fused: one kernel for all parameters; about 10 % faster per epoch on this MLP.
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    # fused: one kernel per update, as fast as the hand-written step's and bit-identical to the loop over parameters.
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Scheduler | None:
    """One scheduler step per batch; None keeps the learning rate constant, as the article does."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    return None


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Index batches of a fresh permutation, drawn on the CPU so every device shuffles alike."""
    return torch.randperm(n, generator=generator).to(device).split(batch_size)


Distort = Callable[[int, torch.device], augment.Draws]
"""Random distortions for a batch of n training images (augment.random_draws)."""


def distortions(cfg: AugmentConfig, generator: torch.Generator) -> Distort | None:
    """The training batches' random distortions; None when train.augment is all zeros: no draws at all."""
    if not cfg.active:
        return None
    return lambda n, device: augment.random_draws(cfg, n, IMAGE_SHAPE, generator, device)


def make_step(training: Training, cfg: TrainConfig, world: World | None = None) -> steps.Step:
    """The hand-written step where it gives the same bits (Training.create left out the optimizer),
    else autograd's, through DistributedDataParallel when several processes share each batch."""
    if training.optimizer is None:
        assert isinstance(training.model, MLP)  # steps.covers only the MLP
        return steps.sgd_step(training.model, cfg.lr, cfg.weight_decay)
    forward = DistributedDataParallel(training.model) if world else training.model
    return steps.autograd_step(forward, training.optimizer, training.scheduler, cfg.label_smoothing, training.precision)


def train_one_epoch(
    step: steps.Step,
    data: Split,
    batches: Iterable[torch.Tensor],
    world: World | None = None,
    distort: Distort | None = None,
) -> dict[str, float]:
    """One pass over `batches` of indices into `data`; loss and accuracy are means over samples.

    Per-batch figures stay on the device until the epoch ends: reading one every batch would
    stall a GPU, and on a CPU the extra small ops cost a tenth of the epoch. A diverged loss is
    therefore caught at the end of its epoch, and reported with the batch where it began.
    With several processes each takes its slice of every batch, and the figures are summed over all.
    `distort` (augmentation) warps each batch's images before its step.
    """
    losses, hits, sizes = [], [], []
    for idx in batches:
        mine = world.shard(idx) if world else idx
        labels = data.labels.index_select(0, mine)
        share = len(mine) * world.size / len(idx) if world else 1.0
        images = data.images.index_select(0, mine)
        if distort:
            # Every process draws the whole batch's distortions and takes its slice: an image is
            # distorted alike however many processes share the batch.
            draws = distort(len(idx), images.device)
            images = (draws.select(world.shard) if world else draws).apply(images)
        loss, logits = step(images, labels, share)
        losses.append(loss)
        hits.append((logits.argmax(1) == labels).sum())
        sizes.append(len(mine))
    batch_losses = torch.stack(losses).double().cpu()
    finite = torch.isfinite(batch_losses)
    if not finite.all():
        first = int((~finite).nonzero()[0])
        raise DivergenceError(f"training loss became {batch_losses[first].item()} at batch {first + 1}")
    totals = torch.stack(
        [
            batch_losses @ torch.tensor(sizes, dtype=torch.float64),
            torch.stack(hits).sum().double().cpu(),
            torch.tensor(float(sum(sizes))),
        ]
    )
    if world:
        totals = world.sum(totals)
    loss_sum, hit_sum, seen = totals.tolist()
    return {"train_loss": loss_sum / seen, "train_accuracy": hit_sum / seen}


def no_progress(batches: Iterable[torch.Tensor], epoch: int) -> Iterable[torch.Tensor]:
    return batches


def fit(
    training: Training,
    train: Split,
    scored: Split,
    cfg: TrainConfig,
    *,
    split: str,
    first_epoch: int = 1,
    progress: Callable[[Iterable[torch.Tensor], int], Iterable[torch.Tensor]] = no_progress,
    world: World | None = None,
) -> Iterator[dict[str, float]]:
    """Train epochs first_epoch..cfg.epochs, scoring `scored` after each as the article tests; yield one
    record each, its scores named after `split` ("test": test_loss, test_accuracy; "val": val_loss, ...).
    With several processes (`world`), every one draws the same shuffles and scores the same model."""
    step = make_step(training, cfg, world)
    distort = distortions(cfg.augment, training.augment_generator)
    for epoch in range(first_epoch, cfg.epochs + 1):
        batches = shuffled_batches(len(train), cfg.batch_size, training.generator, train.labels.device)
        training.model.train()
        try:
            record = train_one_epoch(step, train, progress(batches, epoch), world, distort)
        except DivergenceError as exc:
            raise DivergenceError(f"epoch {epoch}: {exc}; lower train.lr (now {cfg.lr})") from None
        # Scored in the precision the run trains in; the saved model's report (evaluate) is fp32's.
        yield {"epoch": epoch, **record, **scoring.evaluate(training.model, scored, split, training.precision)}
