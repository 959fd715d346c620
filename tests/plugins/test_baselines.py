"""The established fine-tuning baselines: l2-sp, lp-ft, reinit-head and auto-fraction do what
their papers (or the issue) say, measured on real training runs."""

from __future__ import annotations

import copy

import pytest
import torch

from ptbench.api import RunSpec, TransferPlan
from ptbench.results.leaderboard import render
from ptbench.rng import RandomStreams
from ptbench.run.options import RunOptions
from ptbench.results.store import Store
from ptbench.strategies.auto_fraction import AutoFraction
from ptbench.strategies.full import Full
from ptbench.strategies.l2_sp import L2SP
from ptbench.strategies.lp_ft import LPFT
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.reinit_head import ReinitHead
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.sweep import run_sweep
from ptbench.run.training import train


@pytest.fixture(scope="module")
def trained(make_task):
    """Task, streams, target data and a trained source model of seed 0."""
    task = make_task(steps=150)
    streams = RandomStreams(0)
    source = task.model("source", streams.torch("source-init"))
    train(source, task.data("source", streams).train, task.budget("source"), streams.torch("source-batches"))
    return task, streams, task.data("target", streams), source


def fine_tune(trained, strategy, observer=None, every=50):
    """A target model trained under `strategy` exactly as the runner does it; (model, plan)."""
    task, streams, data, source = trained
    target = task.model("target", streams.torch("target-init"))
    plan = strategy.plan(source, target, streams.torch("plan"))
    plan.apply(source, target)
    reference = {n: p.detach().clone() for n, p in source.named_parameters()}
    train(target, data.train, task.budget("target"), streams.torch("target-batches"), plan, strategy, reference,
          observer=observer, observe_every=every)
    return target, plan


# --------------------------------------------------------------------------- l2-sp


def test_l2_sp_keeps_the_weights_closer_to_the_source_than_full_fine_tuning(trained):
    source = trained[3]
    distance = {}
    for strategy in (Full(), L2SP(alpha=0.01), L2SP(alpha=0.1)):
        model, _ = fine_tune(trained, strategy)
        distance[strategy.instance_name] = float((model.W - source.W).detach().norm())
    assert distance["l2-sp"] < 0.8 * distance["full"], distance
    assert distance["l2-sp[alpha=0.1]"] < distance["l2-sp"], "a stronger pull must stay closer"


def test_l2_sp_penalty_is_half_alpha_squared_distance_on_inherited_and_half_beta_norm_on_fresh(trained):
    task, streams, _, source = trained
    target = task.model("target", streams.torch("target-init"))
    plan = PartialFilters(fraction=0.5).plan(source, target, streams.torch("plan"))  # half inherited
    plan.apply(source, target)
    reference = {n: p.detach().clone() for n, p in source.named_parameters()}
    with torch.no_grad():
        target.W.add_(0.1)  # every entry moved by 0.1
    inherited = plan.copy["W"]
    penalty = L2SP(alpha=0.3, beta=0.2).plan(source, target, streams.torch("plan")).penalty
    penalty.inherited = {"W": inherited}  # the partial plan's masks, to test both terms
    expected = 0.5 * 0.3 * 0.01 * int(inherited.sum()) + 0.5 * 0.2 * float((target.W.detach()[~inherited] ** 2).sum())
    assert float(penalty.value(target.named_parameters(), reference).detach()) == pytest.approx(expected, rel=1e-5)
    assert L2SP(alpha=0.0, beta=0.0).plan(source, target, streams.torch("plan")).penalty is None
    assert not L2SP.has_weight_hook()  # declared in the plan, so the engines may batch it


# --------------------------------------------------------------------------- lp-ft


def test_lp_ft_first_phase_trains_only_fresh_filters_then_everything(trained):
    task, streams, _, source = trained
    strategy = LPFT(fraction=0.5, probe=0.4)
    steps = task.budget("target").steps
    probe = int(round(0.4 * steps))
    snapshots = {}
    model, plan = fine_tune(trained, strategy, observer=lambda step, m: snapshots.setdefault(step, m.W.detach().clone()), every=probe)
    inherited = plan.copy["W"]
    initial, after_probe = snapshots[0], snapshots[probe]
    assert torch.equal(after_probe[inherited], source.W.detach()[inherited]), "phase 1 moved inherited filters"
    assert not torch.equal(after_probe[~inherited], initial[~inherited]), "phase 1 did not train the fresh filters"
    assert not torch.equal(model.W.detach()[inherited], source.W.detach()[inherited]), "phase 2 did not fine-tune the body"
    assert sum(s for s, _ in strategy.phases(steps, plan, model)) == steps


def test_lp_ft_with_nothing_fresh_is_plain_fine_tuning(trained):
    task, streams, _, source = trained
    target = task.model("target", streams.torch("target-init"))
    plan = LPFT(fraction=1.0).plan(source, target, streams.torch("plan"))
    assert LPFT(fraction=1.0).phases(100, plan, target) == [(100, plan.freeze)]


# --------------------------------------------------------------------------- heads


@pytest.fixture(scope="module")
def headed():
    """Source and target image CNNs that may share their head (same classes)."""
    from ptbench.tasks.images.models import SmallCNN

    streams = RandomStreams(0)
    source = SmallCNN(1, 8, 5, streams.torch("source-init"), width=4, depth=2)
    target = SmallCNN(1, 8, 5, streams.torch("target-init"), width=4, depth=2)
    source.inherit_head = target.inherit_head = True
    return source, target


def test_reinit_head_copies_everything_but_the_head(headed):
    source, target = headed
    full = Full().plan(source, target, torch.Generator())
    plan = ReinitHead().plan(source, target, torch.Generator())
    heads = {p for layer in target.transfer_layers() if layer.head for p in layer.params}
    assert heads and heads <= set(full.copy), "full copies the head when the task allows it"
    assert not heads & set(plan.copy)
    for name in set(full.copy) - heads:
        assert bool(plan.copy[name].all())


def test_reinit_head_equals_full_on_the_two_layer_cnn(trained):
    task, streams, _, source = trained
    target = task.model("target", streams.torch("target-init"))
    a = Full().plan(source, target, torch.Generator())
    b = ReinitHead().plan(source, target, torch.Generator())
    assert a.copy.keys() == b.copy.keys() and all(torch.equal(a.copy[k], b.copy[k]) for k in a.copy)


def test_lp_ft_probe_phase_trains_only_the_new_head_of_an_image_cnn(headed):
    source, target = headed
    strategy = LPFT()
    plan = strategy.plan(source, target, torch.Generator())
    (probe_steps, frozen), (rest, _) = strategy.phases(10, plan, target)
    trainable = {n for n, p in target.named_parameters() if n not in frozen or not bool(frozen[n].all())}
    heads = {p for layer in target.transfer_layers() if layer.head for p in layer.params}
    assert (probe_steps, rest) == (5, 5)
    assert trainable == heads


# --------------------------------------------------------------------------- auto-fraction


def run(make_task, strategies, seeds, tmp_path, name):
    task = make_task(n_target=30, steps=60)
    with Store(tmp_path / f"{name}.db") as store:
        specs = [RunSpec(task, s, seed) for seed in range(seeds) for s in strategies]
        run_sweep(specs, store, RunOptions(), progress=False)
        return store.frame()


def test_auto_fraction_picks_a_candidate_deterministically_and_completes(make_task, tmp_path):
    strategy = AutoFraction(candidates=3)
    first = run(make_task, [strategy], 2, tmp_path, "a")
    again = run(make_task, [strategy], 2, tmp_path, "b")
    assert list(first["status"]) == ["ok", "ok"]
    chosen = [d["strategy"]["fraction"] for d in first["diagnostics"]]
    assert all(f in (0.0, 0.5, 1.0) for f in chosen)
    assert chosen == [d["strategy"]["fraction"] for d in again["diagnostics"]]
    assert list(first["target_acc"]) == list(again["target_acc"])
    for notes in (d["strategy"] for d in first["diagnostics"]):
        accs = {f: notes[f"val_acc[{f:g}]"] for f in (0.0, 0.5, 1.0)}
        assert accs[notes["fraction"]] == max(accs.values()), "the chosen fraction must have the best validation accuracy"


def test_auto_fraction_returns_the_plan_of_the_winning_candidate(trained):
    task, streams, data, source = trained
    target = task.model("target", streams.torch("target-init"))
    fresh = copy.deepcopy(target)
    from ptbench.run.protocol import plan_context

    context = plan_context(task, data.train, task.budget("target"), streams, "cpu")
    plan = AutoFraction().plan_with_data(source, target, streams.torch("plan"), context)
    fraction = plan.notes["fraction"]
    expected = TransferPlan.filters(source, fresh, fraction, rng=streams.torch("plan"))
    assert torch.equal(plan.copy["W"], expected.copy["W"])
    assert plan.fraction_copied() == pytest.approx(fraction)
    assert all(torch.equal(p, q) for p, q in zip(target.parameters(), fresh.parameters())), "target must stay fresh"


def test_leaderboard_compares_auto_fraction_with_the_best_fixed_fraction(make_task, tmp_path):
    strategies = [Scratch(), PartialFilters(fraction=0.5), Full(), AutoFraction(candidates=3)]
    runs = run(make_task, strategies, 2, tmp_path, "lb")
    page = render(runs, sections=[AutoFraction.leaderboard_section])
    assert "## auto-fraction: choosing the fraction on held-out target data" in page
    row = next(line for line in page.splitlines() if line.startswith("| `signal-noise") and "`auto-fraction" in line)
    means = runs[runs.status == "ok"].groupby("strategy")["target_acc"].mean()
    fractions = {"scratch": 0.0, "partial-filters[fraction=0.5,freeze=False]": 0.5, "full": 1.0}
    best = max(fractions, key=lambda name: (means[name], -fractions[name]))  # ties: smaller fraction
    assert f"`{best}` ({fractions[best]:g})" in row
    assert f"{(means['auto-fraction[candidates=3]'] - means[best]) * 100:+.1f}" in row
