"""Pairing: under one seed every strategy sees the same target data and the same fresh
initialisation of what it does not inherit, in one group or across separate runs, and the
same group run twice gives the same numbers."""

from __future__ import annotations

import dataclasses

import torch

from ptbench.api import RunSpec
from ptbench.run.group import Group
from ptbench.run.options import RunOptions
from ptbench.run.runner import run_groups
from ptbench.strategies.full import Full
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.scratch import Scratch


class _Records:
    """Mixin: remember what the harness handed to the strategy (the fresh target, its
    training data, the donor) and the plan, then behave exactly like the real strategy."""

    def plan_with_data(self, source, target, rng, context):
        plan = super().plan_with_data(source, target, rng, context)
        self.seen = {
            "init": target.W.detach().clone(),
            "donor": source.W.detach().clone(),
            "x": context.train_data.x.clone(),
            "y": context.train_data.y.clone(),
            "plan": plan,
        }
        return plan


class RecordingScratch(_Records, Scratch):
    pass


class RecordingPartialFilters(_Records, PartialFilters):
    pass


def _run(task, seed, *strategies):
    group = Group(task, seed, [RunSpec(task, s, seed) for s in strategies])
    results = list(run_groups([group], RunOptions(batched=False)))  # the per-run path
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    return results


def test_strategies_in_one_group_share_target_data_and_initialisation(make_task):
    task = make_task()
    scratch, partial = RecordingScratch(), RecordingPartialFilters(fraction=0.5, freeze=True)
    _run(task, 0, scratch, partial)
    a, b = scratch.seen, partial.seen
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert torch.equal(a["init"], b["init"])
    # scratch's initial W equals partial-filters' non-inherited entries
    copied = b["plan"].copy["W"]
    assert 0 < int(copied.sum()) < copied.numel()
    assert torch.equal(a["init"][~copied], b["init"][~copied])
    # scratch inherits nothing (donor = None): it plans against the source model's untrained
    # start, never the trained source model partial-filters inherits from
    assert not torch.equal(a["donor"], b["donor"])


def test_pairing_holds_across_separate_groups(make_task):
    # a resumed sweep runs scratch today and partial-filters tomorrow: still paired
    task = make_task()
    scratch, partial = RecordingScratch(), RecordingPartialFilters(fraction=0.5)
    (rs,) = _run(task, 1, scratch)
    (rp,) = _run(task, 1, partial)
    for key in ("x", "y", "init"):
        assert torch.equal(scratch.seen[key], partial.seen[key]), key
    assert rs.source_acc is None and rp.source_acc is not None  # scratch alone trains no source
    (again,) = _run(task, 1, RecordingPartialFilters(fraction=0.5))
    assert again.source_acc == rp.source_acc and again.target_acc == rp.target_acc


def test_other_seeds_are_other_draws(make_task):
    task = make_task()
    a, b = RecordingScratch(), RecordingScratch()
    _run(task, 0, a)
    _run(task, 1, b)
    assert not torch.equal(a.seen["x"], b.seen["x"])
    assert not torch.equal(a.seen["init"], b.seen["init"])


def test_inheriting_nothing_reproduces_scratch_exactly(make_task):
    # same data, same init, same batches: partial-filters at fraction 0 *is* scratch, and
    # at fraction 1 *is* full; any unpaired draw in the harness would break these equalities
    task = make_task()
    scratch, none_, all_, full = _run(
        task, 2, Scratch(), PartialFilters(fraction=0.0), PartialFilters(fraction=1.0), Full()
    )
    assert none_.target_acc == scratch.target_acc
    assert none_.target_train_acc == scratch.target_train_acc
    for key, value in scratch.diagnostics["target"].items():
        assert none_.diagnostics["target"][key] == value, key
    assert all_.target_acc == full.target_acc
    assert all_.diagnostics["target"] == full.diagnostics["target"]


def _comparable(result):
    """A result without its wall-clock times."""
    return {k: v for k, v in dataclasses.asdict(result).items() if k not in ("source_seconds", "target_seconds")}


def test_rerunning_a_group_gives_identical_numbers(make_task):
    task = make_task()
    first = _run(task, 3, Scratch(), PartialFilters(fraction=0.5), Full(freeze=True))
    second = _run(task, 3, Scratch(), PartialFilters(fraction=0.5), Full(freeze=True))
    assert [_comparable(r) for r in first] == [_comparable(r) for r in second]
    assert all(r.target_acc is not None and r.source_acc is not None for r in first)


def test_strategy_order_in_a_group_does_not_change_results(make_task):
    task = make_task()
    forward = _run(task, 4, Scratch(), PartialFilters(fraction=0.5))
    backward = _run(task, 4, PartialFilters(fraction=0.5), Scratch())
    assert _comparable(forward[0]) == _comparable(backward[1])
    assert _comparable(forward[1]) == _comparable(backward[0])
