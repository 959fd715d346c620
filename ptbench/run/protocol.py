"""The planning protocol, written once: how a strategy's plan becomes a target model.

1. Snapshot the donor (and the fresh target).
2. Build the `PlanContext` (target training data, budget, streams, a training loop).
3. `strategy.plan_with_data(...)`; the result must be a TransferPlan that fits the target
   (`check_against`).
4. Planning must have left the donor and the fresh target untouched.
5. `apply` the plan: the planned entries of the target take the donor's values.
6. The donor is still unchanged; a strategy that damaged it is restored and fails.

The per-run path, the batched path and the contract checks all call `make_plan` /
`plan_target`, so a strategy that passes `submit` is planned in the sweep exactly as it was
checked. `batched_refusal` is the single place that decides which path a planned run takes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..api import Diverged, PlanContext, Split, Strategy, Task, TrainBudget, TransferModel, TransferPlan
from ..rng import RandomStreams
from .engines import BatchJob
from .training import accuracy, held_out_loss, train


class PlanError(RuntimeError):
    """The strategy broke the planning protocol; the message says how. `kind` names the
    broken step ("donor", "target": a model changed while planning; "type", "shape": the
    plan itself; "extras": the task lacks what the strategy's `needs_extras` names), and
    `plan` is the plan when there was one, so that the contract checks can report each
    broken step under its own name."""

    def __init__(self, message: str, kind: str = "donor", plan: object = None):
        super().__init__(message)
        self.kind, self.plan = kind, plan


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed_parameters(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]


def restore(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(before[n])


@contextmanager
def donor_guard(donor: nn.Module, strategy: Strategy, during: str = "while training") -> Iterator[None]:
    """The donor is shared by every strategy of a group: whatever happens in the block, it
    leaves unchanged (restored if damaged), and a strategy that changed it fails."""
    before = snapshot(donor)
    try:
        yield
    except BaseException:
        if changed_parameters(donor, before):
            restore(donor, before)
        raise
    changed = changed_parameters(donor, before)
    if changed:
        restore(donor, before)
        raise PlanError(
            f"strategy {strategy.instance_name} modified the {strategy.donor} model it inherits from: it changed the "
            f"{strategy.donor} (donor) model's {changed[0]!r} {during}; plan() must only read the models "
            "(copy the donor first if you need to train something)"
        )


def plan_context(
    task: Task, train_data: Split | None, budget: TrainBudget, streams: RandomStreams, device: str,
    deadline: float | None = None, extras: dict | None = None, engine=None, donor: TransferModel | None = None,
) -> PlanContext:
    """What `Strategy.plan_with_data` may use; its training loop is the harness's own,
    drawing minibatches from the `plan-batches` stream and bounded by the run's deadline.
    `train_many` hands the models to the task's batched `engine` as one program when the
    engine supports every one of them (else it loops over `train`): the same minibatches,
    the same deadline, the same Diverged outcome per model. `donor` (the model the run
    inherits from) is what a candidate plan's `penalty` pulls toward."""

    def train_many(models: list[TransferModel], split: Split, plans: list[TransferPlan | None]) -> list[Diverged | None]:
        models, plans = list(models), list(plans)
        if len(models) != len(plans):  # zip would train the shorter list's share and say nothing
            raise ValueError(f"context.train_many: {len(models)} model(s) but {len(plans)} plan(s); give one plan (or None) per model")
        if len({id(m) for m in models}) != len(models):
            raise ValueError("context.train_many: the same model object appears twice; give each candidate its own copy")
        if engine is not None and all(batched_refusal(engine, task, None, m, budget, p) is None for m, p in zip(models, plans)):
            jobs = [BatchJob(m, split, p, batches=streams.torch("plan-batches"), donor=donor) for m, p in zip(models, plans)]
            return [None if o.status == "ok" else Diverged(o.error or o.status) for o in engine.train(jobs, budget, deadline)]
        out: list[Diverged | None] = []
        for model, plan in zip(models, plans):
            try:
                train(model, split, budget, streams.torch("plan-batches"), plan, deadline=deadline, donor=donor)
                out.append(None)
            except Diverged as err:
                out.append(err)
        return out

    return PlanContext(
        train_data=train_data,
        budget=budget,
        task=task,
        streams=streams,
        device=device,
        train=lambda model, split, plan: train(model, split, budget, streams.torch("plan-batches"), plan, deadline=deadline),
        evaluate=lambda model, split: accuracy(model, split, budget.loss),
        loss=lambda model, split: held_out_loss(model, split, budget.loss),
        extras=dict(extras or {}),
        train_many=train_many,
    )


def make_plan(strategy: Strategy, donor: TransferModel, target: TransferModel, streams: RandomStreams, context: PlanContext) -> TransferPlan:
    """Steps 1-4: the strategy's plan, checked, with the donor and the fresh target untouched."""
    missing = [name for name in strategy.needs_extras if name not in context.extras]
    if missing:
        raise PlanError(
            f"strategy {strategy.instance_name} needs the task's {', '.join(map(repr, missing))} (needs_extras), which "
            f"task {context.task.instance_name} does not name (its extras: {', '.join(sorted(context.extras)) or 'none'}); "
            "run it on a task that provides them",
            "extras",
        )
    before_target = snapshot(target)
    plan = None
    try:
        with donor_guard(donor, strategy, "while planning"):
            plan = strategy.plan_with_data(donor, target, streams.torch("plan"), context)
    except PlanError as err:
        err.plan = plan
        raise
    if not isinstance(plan, TransferPlan):
        raise PlanError(f"strategy {strategy.instance_name}: plan returned {type(plan).__name__}, not a TransferPlan", "type", plan)
    changed = changed_parameters(target, before_target)
    if changed:
        raise PlanError(
            f"strategy {strategy.instance_name} changed the fresh target model's {changed[0]!r} while planning; "
            "plan() must only read the models (copy the donor first if you need to train something)",
            "target", plan,
        )
    try:
        plan.check_against(target)
    except ValueError as err:
        raise PlanError(f"strategy {strategy.instance_name}: {err}", "shape", plan) from None
    if strategy.donor is None and inherits_anything(plan):
        raise PlanError(
            f"strategy {strategy.instance_name} declares donor = None (it inherits nothing, so no source model is "
            "trained for it), but its plan copies entries, reads the donor in a value rule or pulls toward it; "
            "set donor = \"source\"",
            "type", plan,
        )
    return plan


def inherits_anything(plan: TransferPlan) -> bool:
    """Whether the plan's target reads the donor at all: a copied entry (every value rule
    reads only copied entries) or a penalty toward the donor's weights."""
    penalty = plan.penalty is not None and plan.penalty.toward_donor and any(bool(m.any()) for m in plan.penalty.inherited.values())
    return any(bool(mask.any()) for mask in plan.copy.values()) or bool(penalty)


def plan_target(strategy: Strategy, donor: TransferModel, target: TransferModel, streams: RandomStreams, context: PlanContext) -> TransferPlan:
    """The whole protocol: plan (steps 1-4), then apply it to `target` (5-6)."""
    plan = make_plan(strategy, donor, target, streams, context)
    with donor_guard(donor, strategy, "while its plan was applied"):
        plan.apply(donor, target)
    return plan


def batched_refusal(engine, task: Task, strategy: Strategy, target: TransferModel, budget: TrainBudget, plan: TransferPlan | None) -> str | None:
    """Why this planned run cannot go on the batched engine, or None when it goes there.
    The one place the path is decided: no engine, a task that traces training, a strategy
    with a `regularizer` hook (arbitrary code on the model), or what the engine's own
    `supports` refuses (it sees the strategy, for its `phases` and `batch_regularizer`)."""
    if engine is None:
        return "the task has no batched engine (or --no-batch)"
    if task.trace_every() > 0:
        return "the task records trajectories during training"
    if strategy is not None and strategy.has_weight_hook():
        return f"strategy {strategy.instance_name} has a regularizer hook"
    return engine.supports(target, budget, plan, strategy)


def deadline_after(timeout: float | None, runs: int = 1) -> float | None:
    """A time.monotonic() deadline `timeout` seconds per run from now (None: no limit)."""
    return time.monotonic() + timeout * runs if timeout else None


ContextFactory = Callable[[float | None], PlanContext]
