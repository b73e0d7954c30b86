"""The training steps: the Step protocol, autograd's step, and the article's step written by hand.

The hand-written step is the MLP's forward, backward and SGD update as the ATen ops autograd runs.
Autograd records a graph, allocates gradient buffers and dispatches about twice as many small ops as
the step needs; at batch 64 that bookkeeping costs as much as the arithmetic. This step calls the
same kernels in the same order with the same arguments, so the weights after any number of steps
are bit-identical to the autograd step's (tests/test_fast_step.py), in about 60 % of its time.
It covers plain SGD (weight decay allowed; no momentum, schedule or label smoothing) in fp32 on the MLP without
dropout on the CPU, in one process; everything else takes the autograd step.
"""

from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from mnist_pipeline.config import TrainConfig
from mnist_pipeline.training.model import MLP, standardize

Scheduler = torch.optim.lr_scheduler.LRScheduler


class Step(Protocol):
    """A training step: (images, labels, share) of one batch -> (mean loss, logits), after updating the
    weights. `share` is this process's part of the batch times the number of processes: 1.0 on one process."""

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, share: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def autograd_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    label_smoothing: float,
    precision: str = "fp32",
) -> Step:
    """Autograd's step; with precision "bf16" the forward runs under bfloat16 autocast: matrix products and
    convolutions in bf16, the loss in fp32, and the weights, their gradients and the optimizer stay fp32."""
    device = next(model.parameters()).device.type

    def step(images: torch.Tensor, labels: torch.Tensor, share: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; weighting each by its share of the batch makes that
        # the gradient of the whole batch's mean loss even when the parts differ in size.
        (loss if share == 1.0 else loss * share).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss.detach(), logits.detach()

    return step


aten = torch.ops.aten
MEAN = 1  # nll_loss's reduction code for "mean"
IGNORE_INDEX = -100  # cross_entropy's default


def covers(model: torch.nn.Module, cfg: TrainConfig) -> bool:
    """Is this a run (in one process) the hand-written step reproduces exactly?"""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    plain_sgd = cfg.optimizer == "sgd" and cfg.momentum == 0 and cfg.schedule == "constant"
    plain_loss = cfg.label_smoothing == 0 and cfg.precision == "fp32"
    return type(model) is MLP and model.dropout == 0 and on_cpu and plain_sgd and plain_loss


def sgd_step(model: MLP, lr: float, weight_decay: float) -> Step:
    """A Step: (images, labels, share) -> (mean loss, logits), after updating the weights in place."""
    linears = [layer for layer in model.layers if isinstance(layer, torch.nn.Linear)]  # all of them
    weights = [layer.weight for layer in linears]
    biases = [layer.bias for layer in linears]
    one = torch.ones(())

    @torch.no_grad()
    def step(images: torch.Tensor, labels: torch.Tensor, share: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        # `share` is always 1 here: this step only runs in a single process.
        x = images.flatten(1)
        if model.normalize:
            x = standardize(x)
        # Forward, keeping each layer's input: nn.Linear is addmm(bias, x, W^T), then ReLU.
        inputs = []
        for w, b in zip(weights, biases, strict=True):
            inputs.append(x)
            x = torch.addmm(b, x, w.t())
            if len(inputs) < len(weights):
                x = x.relu_()
        logits = x
        # cross_entropy = nll_loss(log_softmax); backward through both as autograd does.
        log_probs = torch.log_softmax(logits, 1)
        loss, total_weight = aten.nll_loss_forward(log_probs, labels, None, MEAN, IGNORE_INDEX)
        grad = aten.nll_loss_backward(one, log_probs, labels, None, MEAN, IGNORE_INDEX, total_weight)
        grad = aten._log_softmax_backward_data(grad, log_probs, 1, log_probs.dtype)
        for i in reversed(range(len(weights))):
            # Autograd's linear backward: grad^T @ input for the weight (not (input^T @ grad)^T, which
            # rounds differently), the batch sum for the bias; no input gradient for the first layer.
            grad_w, grad_b = torch.mm(grad.t(), inputs[i]), grad.sum(0)
            if i > 0:
                grad = aten.threshold_backward(torch.mm(grad, weights[i]), inputs[i], 0)
            for param, g in ((weights[i], grad_w), (biases[i], grad_b)):
                if weight_decay:
                    g = g.add(param, alpha=weight_decay)  # torch.optim.SGD's order
                param.add_(g, alpha=-lr)
        return loss, logits

    return step
