"""Transfer plans: what the target inherits, what stays frozen, and that the source is only read."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from ptbench.api import RunSpec, Strategy, TrainBudget, TransferPlan
from ptbench.errors import PtbenchError
from ptbench.rng import RandomStreams
from ptbench.run.group import Group
from ptbench.run.options import RunOptions
from ptbench.run.runner import run_groups
from ptbench.strategies.full import Full
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.partial_layers import PartialLayers
from ptbench.strategies.scratch import Scratch
from ptbench.run.training import train

M = 10


@dataclass
class Setup:
    task: object
    streams: RandomStreams
    source: torch.nn.Module
    target_data: object


@pytest.fixture(scope="module")
def setup(make_task) -> Setup:
    """A trained source model and the target data of seed 0."""
    task = make_task(m=M)
    streams = RandomStreams(0)
    source = task.model("source", streams.torch("source-init"))
    train(source, task.data("source", streams).train, task.budget("source"), streams.torch("source-batches"))
    return Setup(task, streams, source, task.data("target", streams))


def fresh_target(setup: Setup) -> torch.nn.Module:
    return setup.task.model("target", setup.streams.torch("target-init"))


def inherited_filters(plan: TransferPlan) -> torch.Tensor:
    """The [2, m] mask of filters a plan copies; checks that it copies whole filters."""
    mask = plan.copy["W"]
    assert torch.equal(mask, mask[..., :1].expand_as(mask)), "a plan must copy whole filters"
    return mask[..., 0]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0])
def test_partial_filters_chooses_round_fraction_m_in_each_class_block(setup, fraction):
    target = fresh_target(setup)
    plan = PartialFilters(fraction=fraction).plan(setup.source, target, setup.streams.torch("plan"))
    filters = inherited_filters(plan)
    assert filters.shape == (2, M)
    per_block = filters.sum(dim=1).tolist()
    assert per_block == [round(fraction * M)] * 2
    assert plan.fraction_copied() == pytest.approx(round(fraction * M) / M)
    assert plan.freeze == {}  # freeze=False


def test_blocks_choose_their_filters_independently(setup):
    # one permutation per block: with 5 of 10 per block, equal choices in both blocks
    # for every seed would mean the blocks are not drawn separately
    same = 0
    for seed in range(8):
        plan = PartialFilters(fraction=0.5).plan(setup.source, fresh_target(setup), RandomStreams(seed).torch("plan"))
        filters = inherited_filters(plan)
        same += int(torch.equal(filters[0], filters[1]))
    assert same < 8


def test_inherited_filters_equal_the_source_others_the_fresh_init(setup):
    target = fresh_target(setup)
    init = target.W.detach().clone()
    plan = PartialFilters(fraction=0.5).plan(setup.source, target, setup.streams.torch("plan"))
    source_before = setup.source.W.detach().clone()
    plan.apply(setup.source, target)
    inherited = inherited_filters(plan)
    W = target.W.detach()
    assert torch.equal(W[inherited], setup.source.W.detach()[inherited])
    assert torch.equal(W[~inherited], init[~inherited])
    assert not torch.allclose(W[inherited], init[inherited])  # the copy changed something
    assert torch.equal(setup.source.W.detach(), source_before)  # apply only reads the donor


def test_nested_plans_across_fractions_under_one_seed(setup):
    masks = [
        inherited_filters(PartialFilters(fraction=f).plan(setup.source, fresh_target(setup), RandomStreams(3).torch("plan")))
        for f in (0.2, 0.5, 0.7, 1.0)
    ]
    for small, large in zip(masks, masks[1:]):
        assert bool((small & ~large).sum() == 0), "a smaller fraction's filters must be among a larger one's"
        assert int(small.sum()) < int(large.sum())
    # another seed draws other filters
    other = inherited_filters(PartialFilters(fraction=0.5).plan(setup.source, fresh_target(setup), RandomStreams(4).torch("plan")))
    assert not torch.equal(other, masks[1])


def _train_under(setup: Setup, strategy: Strategy, budget: TrainBudget | None = None):
    """What the runner does for one run, step by step, so each step can be inspected."""
    target = fresh_target(setup)
    init = target.W.detach().clone()
    plan = strategy.plan(setup.source, target, setup.streams.torch("plan"))
    plan.check_against(target)
    plan.apply(setup.source, target)
    start = target.W.detach().clone()
    train(target, setup.target_data.train, budget or setup.task.budget("target"), setup.streams.torch("tb"), plan)
    return plan, init, start, target.W.detach().clone()


def _moved(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per filter: did training change it at all? ([2, m] bool)"""
    return (after - before).abs().amax(dim=-1) > 0


def test_partial_filters_freeze_holds_only_the_inherited_filters(setup):
    plan, _, start, end = _train_under(setup, PartialFilters(fraction=0.5, freeze=True))
    inherited = inherited_filters(plan)
    assert torch.equal(plan.freeze["W"], plan.copy["W"])
    assert torch.equal(end[inherited], start[inherited])
    moved = _moved(start, end)
    assert bool(moved[~inherited].all()), "every fresh filter must train"


def test_partial_filters_without_freeze_trains_every_filter(setup):
    plan, _, start, end = _train_under(setup, PartialFilters(fraction=0.5, freeze=False))
    assert bool(_moved(start, end).all())


@pytest.mark.parametrize(
    "budget",
    [
        TrainBudget(steps=20, lr=0.05, optimizer="sgd", batch_size=16, momentum=0.9, weight_decay=0.1),
        TrainBudget(steps=20, lr=0.01, optimizer="adam", batch_size=16, weight_decay=0.5),
    ],
    ids=["sgd-momentum-wd", "adamw"],
)
def test_frozen_filters_hold_under_momentum_and_weight_decay(setup, budget):
    # weight decay and momentum move parameters whose gradient is zero: the loop must
    # still hold frozen entries exactly
    plan, _, start, end = _train_under(setup, PartialFilters(fraction=0.3, freeze=True), budget)
    inherited = inherited_filters(plan)
    assert torch.equal(end[inherited], start[inherited])
    assert bool(_moved(start, end)[~inherited].all())


def test_full_freeze_keeps_the_source_model_as_is(setup):
    plan, _, start, end = _train_under(setup, Full(freeze=True))
    assert torch.equal(start, setup.source.W.detach())
    assert torch.equal(end, start)


def test_full_and_one_layer_plans_copy_everything(setup):
    for strategy in (Full(), PartialLayers(layers=1), PartialFilters(fraction=1.0)):
        plan, _, start, end = _train_under(setup, strategy)
        assert bool(plan.copy["W"].all()), strategy
        assert torch.equal(start, setup.source.W.detach()), strategy
        assert not torch.equal(end, start), strategy  # then fine-tuned


def test_scratch_and_zero_layers_copy_nothing(setup):
    for strategy in (Scratch(), PartialLayers(layers=0)):
        plan, init, start, _ = _train_under(setup, strategy)
        assert plan.fraction_copied() == 0.0
        assert torch.equal(start, init)


def test_training_the_target_leaves_the_source_untouched(setup):
    before = {n: p.detach().clone() for n, p in setup.source.named_parameters()}
    for strategy in (Full(), PartialFilters(fraction=0.5), PartialFilters(fraction=0.5, freeze=True)):
        _train_under(setup, strategy)
    for n, p in setup.source.named_parameters():
        assert torch.equal(p.detach(), before[n])


def test_check_against_rejects_wrong_masks(setup):
    target = fresh_target(setup)
    with pytest.raises(ValueError, match="unknown parameter"):
        TransferPlan(copy={"V": torch.ones(2, M, 100, dtype=torch.bool)}).check_against(target)
    with pytest.raises(ValueError, match="expected"):
        TransferPlan(copy={"W": torch.ones(2, M, dtype=torch.bool)}).check_against(target)
    with pytest.raises(ValueError, match="bool"):
        TransferPlan(freeze={"W": torch.ones(2, M, 100)}).check_against(target)


def test_fraction_out_of_range_is_a_user_error():
    with pytest.raises(PtbenchError, match="fraction must be in"):
        PartialFilters(fraction=1.5)


class _Vandal(Strategy):
    """A broken strategy that scribbles on the source model while planning."""

    name = "vandal"

    def plan(self, source, target, rng):
        with torch.no_grad():
            source.W.mul_(0.0)
        return TransferPlan.nothing()


def test_runner_fails_a_strategy_that_modifies_the_source_and_restores_it(make_task):
    task = make_task(m=M, steps=50)
    strategies = [Full(freeze=True), _Vandal(), Full(freeze=True)]
    group = Group(task, 0, [RunSpec(task, s, 0) for s in strategies])
    results = list(run_groups([group], RunOptions(batched=False)))  # the per-run path
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "modified the source model" in results[1].error
    # the run after the vandal still inherits the trained source model, not zeros
    assert results[2].target_acc == results[0].target_acc
    assert results[2].target_acc > 0.9
