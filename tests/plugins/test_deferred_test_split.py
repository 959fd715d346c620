"""The signal-noise test split is drawn when it is needed (`DeferredPatchSplit`): the same
numbers as a draw at data time, kept once anyone reads them, and the batched engine measures
accuracy on a draw it does not keep, so a worker never holds every seed's test noise at once."""

from __future__ import annotations

import pickle

import pytest
import torch

from ptbench.api import RunSpec
from ptbench.rng import RandomStreams
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.training import accuracy
from ptbench.strategies.full import Full
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.execute import LocalExecutor
from ptbench.tasks.signal_noise import SignalNoise
from ptbench.tasks.signal_noise.data import DeferredPatchSplit, PatchSplit
from ptbench.tasks.signal_noise.engine import TwoLayerCNNEngine
from conftest import SMALL_TASK


def _eager_test(task, role: str, seed: int) -> PatchSplit:
    """The test split as the task drew it before it was deferred: at data time, from the
    generator of (seed, role-test)."""
    streams = RandomStreams(seed)
    return task.sample(task.n_test, role, task.directions(streams), streams.torch(f"{role}-test"), 0.0)[0]


@pytest.mark.parametrize("role", ["source", "target"])
def test_a_deferred_test_split_is_the_split_drawn_from_its_stream(make_task, role):
    task = make_task(patches=3)
    test = task.data(role, RandomStreams(4)).test
    assert isinstance(test, DeferredPatchSplit) and not test.drawn
    assert len(test) == task.n_test and not test.drawn  # its length needs no draw
    eager = _eager_test(task, role, 4)
    assert torch.equal(test.x, eager.x) and torch.equal(test.y, eager.y)
    assert test.drawn


def test_a_transient_draw_is_not_kept_and_a_read_split_keeps_its_edits(make_task):
    test = make_task().data("target", RandomStreams(2)).test
    first, second = test.transient(), test.transient()
    assert first is not second and torch.equal(first.x, second.x)
    assert not test.drawn
    test.own[0, 0, 0] += 1.0  # someone reads and edits the values: they stay, edits included
    assert test.drawn and test.transient() is test
    assert float(test.transient().own[0, 0, 0]) == float(first.own[0, 0, 0]) + 1.0


def test_the_engine_measures_accuracy_on_test_splits_it_does_not_keep(make_task):
    task = make_task()
    models, deferred, eager = [], [], []
    for seed in range(3):
        models.append(task.model("target", RandomStreams(seed).torch("target-init")))
        deferred.append(task.data("target", RandomStreams(seed)).test)
        eager.append(_eager_test(task, "target", seed))
    accs = TwoLayerCNNEngine().accuracy(models, deferred, "logistic")
    assert not any(split.drawn for split in deferred)
    assert accs == [accuracy(model, split, "logistic") for model, split in zip(models, eager)]


def test_a_deferred_split_moves_and_pickles_without_a_draw(make_task):
    test = make_task().data("target", RandomStreams(3)).test
    assert test.to("cpu") is test and not test.drawn
    moved = test.to("meta")  # any other device: a deferred split that draws, then moves
    assert isinstance(moved, DeferredPatchSplit) and not moved.drawn and len(moved) == len(test)
    assert not test.drawn
    again = pickle.loads(pickle.dumps(test))
    assert not again.drawn and torch.equal(again.x, test.x)


def test_a_draw_of_another_length_than_announced_is_an_error(make_task):
    test = make_task().data("target", RandomStreams(0)).test
    wrong = DeferredPatchSplit(len(test) + 1, test.transient)
    with pytest.raises(ValueError, match="announced"):
        wrong.y


def test_a_factor_set_before_any_read_is_kept_when_the_rest_is_drawn(make_task):
    test = make_task().data("target", RandomStreams(5)).test
    labels = torch.ones(len(test))
    test.y = labels  # set, not read: the other factors are still to be drawn
    assert test.drawn and test.transient() is test
    eager = _eager_test(make_task(), "target", 5)
    assert torch.equal(test.own, eager.own) and test.y is labels


def test_an_edit_of_the_directions_after_the_draw_call_does_not_reach_the_test_split(make_task):
    task = make_task()
    data = task.data("target", RandomStreams(6))
    data.extras["directions"].mul_(-1.0)  # a strategy or a diagnostic edits what it was handed
    assert torch.equal(data.test.x, _eager_test(task, "target", 6).x)


class FailsOneTestDraw(SignalNoise):
    """Signal-noise whose target test draw fails for one seed (the directions tell which)."""

    bad: torch.Tensor | None = None

    def sample(self, n, role, dirs, generator, flip):
        if role == "target" and n == self.n_test and self.bad is not None and torch.equal(dirs, self.bad):
            raise RuntimeError("no test data for this seed")
        return super().sample(n, role, dirs, generator, flip)


def test_an_error_in_a_deferred_test_draw_fails_that_seeds_runs_not_the_program(make_task):
    task = FailsOneTestDraw(**{**SMALL_TASK, "n_test": 150})
    FailsOneTestDraw.bad = task.directions(RandomStreams(1))
    try:
        specs = [RunSpec(task, strategy, seed) for seed in (0, 1, 2) for strategy in (Scratch(), Full())]
        results = {(r.seed, r.strategy): r for r in LocalExecutor().run(group_specs(specs), RunOptions(cache_dir=None))}
    finally:
        FailsOneTestDraw.bad = None
    assert {r.status for (seed, _), r in results.items() if seed != 1} == {"ok"}
    failed = [r for (seed, _), r in results.items() if seed == 1]
    assert {r.status for r in failed} == {"failed"} and all("test data" in r.error and "no test data" in r.error for r in failed)
    assert all(r.path == "batched" for (seed, _), r in results.items() if seed != 1)
