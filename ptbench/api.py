"""The plugin contract: Task, Strategy, TransferPlan, and the records a run produces.

A contributor reads this file and one example in `strategies/` or `tasks/`, and nothing else.
The harness only ever talks to plugins through what is defined here, which is why it can batch
runs, move them to a GPU, cache source models and check that a strategy left the source model
untouched, without knowing any particular task or strategy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .spec import Parametrized
from .rng import RandomStreams

# --------------------------------------------------------------------------- data and budgets


@dataclass
class Split:
    """Inputs and labels of one split. Labels are +1/-1 floats for the logistic loss, class
    indices for cross-entropy."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: str | torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class TaskData:
    """One side (source or target) of a task: training and test splits, and whatever the task
    wants its diagnostics to see again (for signal-noise: the signal directions)."""

    train: Split
    test: Split
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: str | torch.device) -> "TaskData":
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device))


@dataclass(frozen=True)
class TrainBudget:
    """How a model is trained. A task declares one budget for all strategies, so that every
    strategy is compared under the same number of steps and the same optimiser."""

    steps: int
    lr: float
    optimizer: str = "gd"  # "gd" (full batch), "sgd" or "adam" (minibatches)
    loss: str = "logistic"  # "logistic" (labels +1/-1, scalar output) or "cross_entropy"
    batch_size: int | None = None  # None: the whole training set every step
    momentum: float = 0.0
    weight_decay: float = 0.0


class Diverged(RuntimeError):
    """Training produced NaN or infinity; the run is stored as `diverged`. A strategy that
    trains candidates while planning (auto-fraction) may catch it to skip a candidate."""


class RunTimeout(RuntimeError):
    """Training went past its deadline (`--timeout`); the run is stored as `timeout`."""


# --------------------------------------------------------------------------- transfer layers


@dataclass(frozen=True)
class TransferLayer:
    """A layer as transfer strategies see it: the parameters that belong to it and the shape
    of its filter index. The leading `len(filter_shape)` dimensions of every parameter in the
    layer index filters; all but the last of those are blocks (the theory's model has one
    block of m filters per class), and fraction-based strategies choose within each block.

    `follow` lists (parameter, dim) pairs of the *next* layer whose slices along dim belong
    to these filters (a conv's output channels are the next conv's input channels); copying a
    filter also copies those slices, so an inherited filter keeps the weights that read it.
    """

    name: str
    params: tuple[str, ...]
    filter_shape: tuple[int, ...]
    head: bool = False
    follow: tuple[tuple[str, int], ...] = ()


class TransferModel(nn.Module):
    """A model the harness can transfer between: it lists its layers in forward order."""

    #: Whether the target's head may be inherited (False when the class sets differ).
    inherit_head: bool = False

    def transfer_layers(self) -> list[TransferLayer]:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------- plans


@dataclass
class TransferPlan:
    """What the target model takes from the donor, and what stays fixed while it trains.

    `copy[name]` and `freeze[name]` are boolean masks of the parameter's shape (True: copy
    this entry from the donor / never change it). Parameters missing from a dict are neither
    copied nor frozen. A plan is pure data, so the harness can check it, batch it and move it.
    """

    copy: dict[str, torch.Tensor] = field(default_factory=dict)
    freeze: dict[str, torch.Tensor] = field(default_factory=dict)
    #: What the strategy decided while planning (a fraction chosen on validation data, say),
    #: numbers and strings only; stored with the run as diagnostics["strategy"]. Carried by
    #: the plan rather than the strategy instance, which is shared across seeds and workers.
    notes: dict[str, Any] = field(default_factory=dict)

    # -- building plans -------------------------------------------------------------------
    @classmethod
    def nothing(cls) -> "TransferPlan":
        return cls()

    @classmethod
    def from_filter_masks(
        cls, target: TransferModel, masks: dict[str, torch.Tensor], freeze: bool, follow: bool = True
    ) -> "TransferPlan":
        """Expand per-layer filter masks (layer name -> bool tensor of filter_shape) to
        per-parameter masks, including (with `follow`) the `follow` slices of the next layer.
        Whole-layer plans pass follow=False: "the first k layers" must not reach into k+1."""
        shapes = dict(target.named_parameters())
        plan = cls()
        for layer in target.transfer_layers():
            mask = masks.get(layer.name)
            if mask is None:
                continue
            mask = mask.to(torch.bool).cpu()
            for pname in layer.params:
                full = _broadcast_leading(mask, shapes[pname].shape)
                plan._merge(pname, full, freeze)
            for pname, dim in layer.follow if follow else ():
                shape = shapes[pname].shape
                index = [slice(None)] * len(shape)
                full = torch.zeros(shape, dtype=torch.bool)
                flat = mask.reshape(-1)
                index[dim] = flat
                full[tuple(index)] = True
                plan._merge(pname, full, freeze)
        return plan

    @classmethod
    def full(cls, source: TransferModel, target: TransferModel, freeze: bool = False) -> "TransferPlan":
        """Every transferable layer, whole: the head only when the task allows it."""
        layers = _transferable(source, target)
        return cls.from_filter_masks(
            target, {l.name: torch.ones(l.filter_shape, dtype=torch.bool) for l in layers}, freeze, follow=False
        )

    @classmethod
    def layers(
        cls, source: TransferModel, target: TransferModel, count: int, freeze: bool = False
    ) -> "TransferPlan":
        """The first `count` transferable layers, whole (Yosinski's AnB / AnB+)."""
        layers = _transferable(source, target)[:count]
        return cls.from_filter_masks(
            target, {l.name: torch.ones(l.filter_shape, dtype=torch.bool) for l in layers}, freeze, follow=False
        )

    @classmethod
    def filters(
        cls,
        source: TransferModel,
        target: TransferModel,
        fraction: float,
        rng: torch.Generator,
        freeze: bool = False,
    ) -> "TransferPlan":
        """round(fraction * block size) random filters of every block of every transferable
        layer. One permutation per block is drawn whatever the fraction, so under one seed the
        filters inherited at fraction 0.25 are among those inherited at 0.5 (nested plans)."""
        masks = {}
        for layer in _transferable(source, target):
            *blocks, width = layer.filter_shape
            n_blocks = int(torch.tensor(blocks).prod()) if blocks else 1
            keep = int(round(fraction * width))
            mask = torch.zeros(n_blocks, width, dtype=torch.bool)
            for b in range(n_blocks):
                order = torch.randperm(width, generator=rng)
                mask[b, order[:keep]] = True
            masks[layer.name] = mask.reshape(layer.filter_shape)
        return cls.from_filter_masks(target, masks, freeze)

    def _merge(self, name: str, mask: torch.Tensor, freeze: bool) -> None:
        self.copy[name] = self.copy.get(name, torch.zeros_like(mask)) | mask
        if freeze:
            self.freeze[name] = self.freeze.get(name, torch.zeros_like(mask)) | mask

    # -- using plans ----------------------------------------------------------------------
    def apply(self, donor: nn.Module, target: nn.Module) -> None:
        """Copy the planned entries from donor into target; the donor is only read."""
        donor_params = dict(donor.named_parameters())
        with torch.no_grad():
            for name, param in target.named_parameters():
                mask = self.copy.get(name)
                if mask is None:
                    continue
                mask = mask.to(param.device)
                source = donor_params[name].detach().to(param.device)
                param.copy_(torch.where(mask, source, param))

    def fraction_copied(self) -> float:
        total = sum(m.numel() for m in self.copy.values())
        return float(sum(m.sum() for m in self.copy.values()) / total) if total else 0.0

    def check_against(self, model: nn.Module) -> None:
        """Raise ValueError when a mask names an unknown parameter or has the wrong shape."""
        shapes = {n: p.shape for n, p in model.named_parameters()}
        for kind, masks in (("copy", self.copy), ("freeze", self.freeze)):
            for name, mask in masks.items():
                if name not in shapes:
                    raise ValueError(f"{kind} mask for unknown parameter {name!r}")
                if tuple(mask.shape) != tuple(shapes[name]) or mask.dtype != torch.bool:
                    raise ValueError(
                        f"{kind} mask for {name!r} has shape {tuple(mask.shape)} {mask.dtype}, "
                        f"expected {tuple(shapes[name])} bool"
                    )


def _broadcast_leading(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A mask over the leading dims of `shape`, repeated along the rest."""
    view = mask.reshape(tuple(mask.shape) + (1,) * (len(shape) - mask.dim()))
    return view.expand(shape).clone()


def _transferable(source: TransferModel, target: TransferModel) -> list[TransferLayer]:
    """Layers present in both models with equal shapes; heads only when the target allows."""
    source_params = dict(source.named_parameters())
    out = []
    for layer in target.transfer_layers():
        if layer.head and not getattr(target, "inherit_head", False):
            continue
        target_params = dict(target.named_parameters())
        if all(
            p in source_params and source_params[p].shape == target_params[p].shape
            for p in layer.params
        ):
            out.append(layer)
    return out


# --------------------------------------------------------------------------- plugins


class Task(Parametrized):
    """A source/target pair of datasets, the architecture both models share, and the budget.

    Draw everything random from `streams` (one generator per role): the harness relies on
    equal roles giving equal draws to pair strategies under one seed.
    """

    def data(self, role: str, streams: RandomStreams) -> TaskData:  # pragma: no cover - abstract
        """role is "source" or "target"."""
        raise NotImplementedError

    def model(self, role: str, generator: torch.Generator) -> TransferModel:  # pragma: no cover
        """A freshly initialised model for `role`, its parameters drawn from `generator`."""
        raise NotImplementedError

    def budget(self, role: str) -> TrainBudget:  # pragma: no cover - abstract
        raise NotImplementedError

    def diagnostics(self, model: nn.Module, data: TaskData, plan: "TransferPlan | None") -> dict[str, Any]:
        """Task-specific measurements of a model (numbers only), stored with the run: the
        harness calls it after source training and after target training (optional)."""
        return {}

    def trace_every(self) -> int:
        """Record `diagnostics` every this many training steps as a trajectory (0: never).
        Tracing costs time, so tasks turn it on only where plots need it."""
        return 0

    def batched_engine(self) -> Any:
        """A `ptbench.run.engines.BatchedEngine` that trains many runs of this task's model as one
        tensor program, or None (the default: every run takes the per-run path). The runner
        still sends it only the runs it `supports`; strategies with training hooks never."""
        return None


class Strategy(Parametrized):
    """How the target model inherits from a trained model.

    Most strategies only implement `plan`. `donor` says which trained model they inherit
    from: the source model, or (the selffer control of Yosinski et al.) a model trained on the
    target task itself. The optional hooks below change training; a strategy that overrides
    one runs on the per-run training path.
    """

    donor: ClassVar[str] = "source"

    def plan(self, source: TransferModel, target: TransferModel, rng: torch.Generator) -> TransferPlan:
        raise NotImplementedError  # pragma: no cover - abstract

    def plan_with_data(
        self,
        source: TransferModel,
        target: TransferModel,
        rng: torch.Generator,
        context: "PlanContext",
    ) -> TransferPlan:
        """Like `plan`, for strategies that must look at the target data first (choosing a
        fraction on a validation split, say). The harness always calls this; the default
        ignores the context. A strategy that overrides it runs on the per-run path."""
        return self.plan(source, target, rng)

    def regularizer(self, model: nn.Module, reference: dict[str, torch.Tensor], plan: TransferPlan) -> torch.Tensor | None:
        """An extra loss term each step (reference: the donor's parameters); None for none."""
        return None

    def phases(self, steps: int, plan: TransferPlan, model: TransferModel) -> list[tuple[int, dict[str, torch.Tensor]]]:
        """Training as (steps, freeze masks) phases; the default is one phase under the plan."""
        return [(steps, plan.freeze)]

    @classmethod
    def leaderboard_section(cls, summary: "Any") -> str | None:
        """Extra markdown for the leaderboard when this strategy has results (optional).
        `summary` is `ptbench.results.stats.summarize`'s table over all tasks and strategies."""
        return None

    @classmethod
    def customises_training(cls) -> bool:
        return (
            cls.regularizer is not Strategy.regularizer
            or cls.phases is not Strategy.phases
            or cls.plan_with_data is not Strategy.plan_with_data
        )


@dataclass
class PlanContext:
    """What `Strategy.plan_with_data` may use: the target training data, the task's budget,
    the task itself (for fresh models), `train(model, split, plan)` which trains under the
    task's budget with the harness's own training loop, `evaluate(model, split)` (accuracy),
    `loss(model, split)` (the budget's loss on a split, no gradient), and `extras`: what the
    task's target data names about itself (signal-noise: its signal "directions" u, v_1, v_2),
    empty for tasks that name nothing."""

    train_data: Split
    budget: TrainBudget
    task: "Task"
    streams: RandomStreams
    device: str
    train: Any  # Callable[[TransferModel, Split, TransferPlan], None]
    evaluate: Any  # Callable[[TransferModel, Split], float]
    loss: Any = None  # Callable[[TransferModel, Split], float]
    extras: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSpec:
    """One (task variant, strategy variant, seed): one row of results."""

    task: Task
    strategy: Strategy
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task.key}|{self.strategy.key}|{self.seed}"


@dataclass
class RunResult:
    """What one run produced; `status` is ok, failed, diverged or timeout."""

    task: str
    task_params: dict[str, Any]
    strategy: str
    strategy_params: dict[str, Any]
    seed: int
    key: str
    status: str = "ok"
    error: str | None = None
    source_acc: float | None = None
    target_acc: float | None = None
    target_train_acc: float | None = None
    source_seconds: float | None = None
    target_seconds: float | None = None
    device: str = "cpu"
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: How the target was trained: "batched" (a task's engine) or "per-run" (the training
    #: loop); None when the run failed before training.
    path: str | None = None

    @classmethod
    def for_spec(cls, spec: RunSpec, **fields: Any) -> "RunResult":
        return cls(
            task=spec.task.instance_name,
            task_params=spec.task.values,
            strategy=spec.strategy.instance_name,
            strategy_params=spec.strategy.values,
            seed=spec.seed,
            key=spec.key,
            **fields,
        )
