"""Training a model under a transfer plan, and measuring it.

This is the per-run path: any model, any strategy hook. Frozen entries are held fixed by
zeroing their gradients *and* restoring their values after each step, so no optimiser
(momentum, Adam, weight decay) can move them.

Learning-rate scales (`TransferPlan.lr_scale`) scale each optimiser step's *change* of an
entry: after the step, an entry with scale s is set to before + s * (after - before). Every
optimiser here moves a parameter by the learning rate times a quantity that does not depend
on the learning rate (SGD with momentum and weight decay: lr * buffer; AdamW: lr * (m / (sqrt(v)
+ eps) + wd * p)), so this is exactly a per-entry learning rate s * lr for all of them (scaling
gradients instead would be exact only for plain SGD and a no-op under Adam, which normalises
them away). Scale 0 freezes (the entry is held like a frozen one); entries at scale 1 are left
exactly as the optimiser put them.
"""

from __future__ import annotations

import copy

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ptbench.api import Diverged, RegularizerBatch, RunTimeout, Split, Strategy, TrainBudget, TransferPlan

__all__ = ["Diverged", "RunTimeout", "accuracy", "held_out_loss", "loss_fn", "train"]


#: observer(step, model) is called before the first step, every `every` steps, and at the end:
#: how diagnostics record trajectories without the training loop knowing what they measure.
Observer = Callable[[int, nn.Module], None]


@dataclass
class TrainLog:
    first_loss: float
    last_loss: float
    steps: int


def loss_fn(kind: str, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "logistic":
        return F.softplus(-y * output).mean()  # log(1 + exp(-y f)), the theory's loss
    if kind == "cross_entropy":
        return F.cross_entropy(output, y)
    raise ValueError(f"unknown loss {kind!r}")


def predictions(kind: str, output: torch.Tensor) -> torch.Tensor:
    if kind == "logistic":
        return torch.where(output >= 0, 1.0, -1.0).to(output.dtype)
    return output.argmax(dim=1)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, loss: str, batch_size: int = 4096) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        out = model(split.x[start : start + batch_size])
        correct += int((predictions(loss, out) == split.y[start : start + batch_size]).sum())
    model.train()
    return correct / max(len(split), 1)


@torch.no_grad()
def held_out_loss(model: nn.Module, split: Split, loss: str) -> float:
    """The training loss on a split without a gradient (model in eval mode, then back)."""
    model.eval()
    value = float(loss_fn(loss, model(split.x), split.y))
    model.train()
    return value


def _optimizer(budget: TrainBudget, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if budget.optimizer in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=budget.lr, momentum=budget.momentum, weight_decay=budget.weight_decay)
    if budget.optimizer == "adam":
        return torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    raise ValueError(f"unknown optimizer {budget.optimizer!r}")


def _scalar_term(value: object, strategy: Strategy, hook: str) -> torch.Tensor | None:
    """A regulariser's return value, checked: None or a scalar tensor, computed from real
    tensors (a term on the "meta" device came from the parameters of a `structure_only`
    model: a batchable_regularizer that broke its promise)."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"strategy {strategy.instance_name}: {hook} returned {shape}, not a scalar tensor; sum or average the penalty (or return None)")
    if value.device.type == "meta":
        raise ValueError(
            f"strategy {strategy.instance_name}: {hook} computed its term from batch.model's parameters, which "
            "batchable_regularizer = True promises it never reads (a batched engine hands it the model's structure "
            "only); read batch.features and batch.output instead, or drop the declaration so it trains per run"
        )
    return value.reshape(())


def structure_only(model: nn.Module) -> nn.Module:
    """A copy of `model` with its parameters and buffers on the "meta" device (no values): what
    a batched engine hands a `batchable_regularizer` as `batch.model`, so that it can ask for
    `feature_layers()` but cannot compute with any one run's weights, which under a batched
    program would silently be the wrong run's. A term built from them comes back on "meta"
    and `_scalar_term` says so; one that mixes them with the batch's tensors raises."""
    return copy.deepcopy(model).to("meta").requires_grad_(False)


@torch.no_grad()
def donor_features(donor: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The donor's features for x: no gradient, the donor in eval mode (so BatchNorm reads and
    updates no statistics), then back in the mode it was in."""
    was_training = donor.training
    donor.eval()
    try:
        return {k: v.detach() for k, v in donor.forward_features(x)[1].items()}
    finally:
        donor.train(was_training)


def train(
    model: nn.Module,
    data: Split,
    budget: TrainBudget,
    generator: torch.Generator,
    plan: TransferPlan | None = None,
    strategy: Strategy | None = None,
    reference: dict[str, torch.Tensor] | None = None,
    deadline: float | None = None,
    observer: Observer | None = None,
    observe_every: int = 50,
    donor: nn.Module | None = None,
) -> TrainLog:
    """Train `model` on `data` for the budget's steps; minibatch order comes from `generator`.

    `deadline` is a time.monotonic() value past which training stops with RunTimeout.
    `donor` is the model the plan inherits from; a strategy's `batch_regularizer` with
    `needs_donor_features` reads its features (without gradient), and a plan's `penalty` its
    weights (`reference`, a copy, when not given).
    """
    plan = plan or TransferPlan.nothing()
    phases = strategy.phases(budget.steps, plan, model) if strategy else [(budget.steps, plan.freeze)]
    params = dict(model.named_parameters())
    optimizer = _optimizer(budget, list(params.values()))
    batch_hook = strategy is not None and type(strategy).batch_regularizer is not Strategy.batch_regularizer
    wants_donor = batch_hook and type(strategy).needs_donor_features
    if wants_donor and donor is None:
        raise ValueError(f"strategy {strategy.instance_name} needs the donor's features, and no donor was given to train()")
    penalty = plan.penalty if plan.penalty is not None and plan.penalty.active() else None
    if penalty is not None and reference is None:
        if donor is None:
            raise ValueError("the plan has a weight penalty toward the donor, and no donor (or reference) was given to train()")
        reference = {name: p.detach().clone() for name, p in donor.named_parameters()}
    # learning-rate scales: 0 holds an entry (as frozen), 1 leaves it alone, others scale the step
    scales = {name: plan.lr_scales(name, tuple(params[name].shape)).to(params[name].device) for name in plan.lr_scale if name in params}
    held = {name: scale == 0 for name, scale in scales.items() if bool((scale == 0).any())}
    scaled = {name: (scale, (scale != 0) & (scale != 1)) for name, scale in scales.items()}
    scaled = {name: pair for name, pair in scaled.items() if bool(pair[1].any())}
    n = len(data)
    batch = budget.batch_size if budget.optimizer != "gd" and budget.batch_size else n
    order = torch.randperm(n, generator=generator).to(data.x.device) if batch < n else None
    cursor = 0
    first = last = math.nan
    step = 0
    model.train()
    for phase_steps, freeze in phases:
        if held:
            freeze = dict(freeze)
            for name, mask in held.items():
                freeze[name] = mask | freeze[name].to(mask.device) if name in freeze else mask
        frozen = {
            name: (mask.to(params[name].device), params[name].detach().clone())
            for name, mask in freeze.items()
            if bool(mask.any())
        }
        for _ in range(phase_steps):
            if observer is not None and step % observe_every == 0:
                observer(step, model)
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeout(f"run exceeded its time limit at step {step}")
            if order is None:
                xb, yb = data.x, data.y
            else:
                if cursor + batch > n:
                    order = torch.randperm(n, generator=generator).to(data.x.device)
                    cursor = 0
                idx = order[cursor : cursor + batch]
                cursor += batch
                xb, yb = data.x[idx], data.y[idx]
            if batch_hook:
                output, features = model.forward_features(xb)
                loss = loss_fn(budget.loss, output, yb)
            else:
                loss = loss_fn(budget.loss, model(xb), yb)
            if strategy is not None and reference is not None and strategy.has_weight_hook():
                extra = _scalar_term(strategy.regularizer(model, reference, plan), strategy, "regularizer")
                if extra is not None:
                    loss = loss + extra
            if penalty is not None:
                loss = loss + penalty.value(model.named_parameters(), reference)
            if batch_hook:
                seen = donor_features(donor, xb) if wants_donor else None
                batch_view = RegularizerBatch(xb, yb, step, model, output, features, seen, plan)
                extra = _scalar_term(strategy.batch_regularizer(batch_view), strategy, "batch_regularizer")
                if extra is not None:
                    loss = loss + extra
            value = float(loss.detach())
            if not math.isfinite(value):
                raise Diverged(f"loss became {value} at step {step}")
            if step == 0:
                first = value
            last = value
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            for name, (mask, _) in frozen.items():
                if params[name].grad is not None:
                    params[name].grad.masked_fill_(mask, 0.0)
            before = {name: params[name].detach().clone() for name in scaled}
            optimizer.step()
            with torch.no_grad():
                for name, (scale, where) in scaled.items():
                    start = before[name]
                    params[name].copy_(torch.where(where, start + scale * (params[name] - start), params[name]))
                for name, (mask, value0) in frozen.items():
                    params[name].copy_(torch.where(mask, value0, params[name]))
            step += 1
    if observer is not None:
        observer(step, model)
    for name, param in params.items():
        if not bool(torch.isfinite(param).all()):
            raise Diverged(f"parameter {name} is not finite after training")
    return TrainLog(first_loss=first, last_loss=last, steps=step)
