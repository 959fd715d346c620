"""The training loop: it learns, it is reproducible, and it reports what went wrong."""

from __future__ import annotations

import math
import time

import pytest
import torch

from ptbench.api import Split, TrainBudget
from ptbench.rng import RandomStreams
from ptbench.run.training import Diverged, RunTimeout, accuracy, loss_fn, train


def _fresh(task, seed=0, role="source"):
    streams = RandomStreams(seed)
    data = task.data(role, streams)
    model = task.model(role, streams.torch(f"{role}-init"))
    return streams, data, model


def test_loss_falls_and_an_easy_task_is_learned(make_task):
    task = make_task(label_flip=0.0)
    streams, data, model = _fresh(task)
    budget = task.budget("source")
    chance = accuracy(model, data.test, budget.loss)
    log = train(model, data.train, budget, streams.torch("batches"))
    assert log.steps == task.steps
    assert log.first_loss == pytest.approx(math.log(2), abs=0.05)  # f ~ 0 at sigma0 = 0.01
    assert log.last_loss < 0.25 * log.first_loss
    assert accuracy(model, data.test, budget.loss) >= 0.95
    assert accuracy(model, data.train, budget.loss) == 1.0
    assert chance < 0.9  # the untrained model was not already right


def test_minibatch_sgd_and_adam_also_learn(make_task):
    task = make_task(label_flip=0.0)
    for budget in (
        TrainBudget(steps=100, lr=1.0, optimizer="sgd", batch_size=20, momentum=0.5),
        TrainBudget(steps=60, lr=0.01, optimizer="adam", batch_size=32),
    ):
        streams, data, model = _fresh(task)
        log = train(model, data.train, budget, streams.torch("batches"))
        assert log.last_loss < log.first_loss
        assert accuracy(model, data.test, budget.loss) >= 0.9, budget


def test_same_generators_same_model(make_task):
    task = make_task()
    budget = TrainBudget(steps=30, lr=0.5, optimizer="sgd", batch_size=16)
    weights = []
    for _ in range(2):
        streams, data, model = _fresh(task, seed=4)
        train(model, data.train, budget, streams.torch("batches"))
        weights.append(model.W.detach().clone())
    assert torch.equal(weights[0], weights[1])
    # another batch order gives another model
    streams, data, model = _fresh(task, seed=4)
    train(model, data.train, budget, streams.torch("other-batches"))
    assert not torch.equal(model.W.detach(), weights[0])


def test_non_finite_loss_is_reported_as_diverged(make_task):
    task = make_task()
    streams, data, model = _fresh(task)
    x = data.train.x.clone()
    x[0, 0, 0] = float("nan")
    with pytest.raises(Diverged, match="loss became nan"):
        train(model, Split(x, data.train.y), task.budget("source"), streams.torch("b"))


def test_deadline_stops_training_with_run_timeout(make_task):
    task = make_task()
    streams, data, model = _fresh(task)
    with pytest.raises(RunTimeout, match="time limit"):
        train(model, data.train, task.budget("source"), streams.torch("b"), deadline=time.monotonic() - 1)


def test_observer_sees_the_start_every_k_steps_and_the_end(make_task):
    task = make_task(steps=25)
    streams, data, model = _fresh(task)
    seen = []
    train(model, data.train, task.budget("source"), streams.torch("b"), observer=lambda s, m: seen.append(s), observe_every=10)
    assert seen == [0, 10, 20, 25]


def test_losses_and_accuracy_by_hand():
    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = torch.tensor([2.0, -1.0, -0.5, 0.0])
    expected = torch.log1p(torch.exp(-y * out)).mean()
    assert float(loss_fn("logistic", out, y)) == pytest.approx(float(expected))
    with pytest.raises(ValueError):
        loss_fn("hinge", out, y)

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    # predictions: output >= 0 is class +1; so 0.0 for a -1 label is wrong
    assert accuracy(Identity(), Split(out, y), "logistic") == 0.5
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(Identity(), Split(logits, torch.tensor([0, 1, 1])), "cross_entropy") == pytest.approx(2 / 3)
