"""Hook strategies on the signal-noise span engine: LP-FT's phases, L2-SP's weight penalty and
auto-fraction's batched candidates train on the engine exactly as on the per-run loop (the
same gradient descent: float64 agrees to rounding, float32 to a tight tolerance with equal
accuracies), and the engine refuses the phases and penalties it cannot express."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import torch

from ptbench.api import Diverged, Split, Strategy, TransferPlan, ValueRule, WeightPenalty
from ptbench.rng import RandomStreams
from ptbench.run.engines import BatchJob
from ptbench.run.protocol import plan_context
from ptbench.run.training import accuracy, train
from ptbench.strategies.auto_fraction import AutoFraction
from ptbench.strategies.full import Full
from ptbench.strategies.l2_sp import L2SP
from ptbench.strategies.lp_ft import LPFT
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.scratch import Scratch
from ptbench.tasks.signal_noise.data import PatchSplit
from ptbench.tasks.signal_noise.engine import TwoLayerCNNEngine

from test_engine import assert_same_runs, batched, per_run, specs_for


class LPFTWithPull(LPFT):
    """LP-FT whose inherited filters are also pulled toward the source (phases and a penalty
    in one run: the pull stops while a phase freezes the filter)."""

    name = "lp-ft-with-pull"

    def plan(self, source, target, rng):
        plan = super().plan(source, target, rng)
        plan.penalty = WeightPenalty(0.05, 0.0, {name: mask.clone() for name, mask in plan.copy.items()})
        return plan


class Phases(Strategy):
    """Full transfer trained in given phases: (steps, "none" | "all" | "half") each, "half"
    freezing the first half of every filter's entries."""

    name = "given-phases"

    def __init__(self, phases, penalty: float = 0.0):
        super().__init__()
        self.given, self.penalty = phases, penalty

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        if self.penalty:
            plan.penalty = WeightPenalty(self.penalty, 0.0, {"W": plan.copy["W"].clone()})
        return plan

    def phases(self, steps, plan, model):
        out = []
        for count, which in self.given:
            mask = torch.zeros_like(model.W, dtype=torch.bool)
            if which == "all":
                mask[:] = True
            elif which == "half":
                mask[..., : model.d // 2] = True
            out.append((count, {"W": mask}))
        return out


HOOKED = [
    LPFT(fraction=0.5),
    LPFT(fraction=0.25, probe=0.3),
    LPFT(fraction=0.75, probe=0.8),
    LPFT(fraction=0.5, probe=0.0),
    LPFT(fraction=1.0),
    L2SP(alpha=0.01),
    L2SP(alpha=1.0),
    L2SP(alpha=0.01, beta=0.1),  # full transfer: no fresh filter for beta to pull toward zero
    LPFTWithPull(fraction=0.5, probe=0.4),
    Full(),  # plain plans in the same program
    PartialFilters(fraction=0.5, freeze=True),
]


def cast(split: PatchSplit, dtype: torch.dtype) -> PatchSplit:
    return PatchSplit(*(t.to(dtype) if t.is_floating_point() else t for t in (split.shared, split.own, split.index, split.coef, split.y)))


def source_and_target(task, dtype, seed=0):
    streams = RandomStreams(seed)
    source = task.model("source", streams.torch("source-init")).to(dtype)
    assert TwoLayerCNNEngine().train([BatchJob(source, cast(task.data("source", streams).train, dtype))], task.budget("source"))[0].status == "ok"
    return source, task.data("target", streams), streams


def planned(task, strategy, source, dtype, streams):
    target = task.model("target", streams.torch("target-init")).to(dtype)
    plan = strategy.plan(source, target, streams.torch("plan"))
    plan.apply(source, target)
    return target, plan


# float32: the two paths sum in different orders (about 5e-7 of the weight scale here); float64
# shows they are the same gradient descent (about 1e-15; with the slow tests, 0.7 s each)
@pytest.mark.parametrize("dtype, tol, patches", [
    (torch.float32, 1e-4, 2),
    pytest.param(torch.float64, 1e-12, 2, marks=pytest.mark.slow),
    pytest.param(torch.float64, 1e-12, 3, marks=pytest.mark.slow),
])
def test_phases_and_penalties_in_one_program_equal_the_per_run_loop(make_task, dtype, tol, patches):
    task = make_task(patches=patches)  # 2: one own patch per example; 3: two (the engine's Q > 1 branch)
    budget = task.budget("target")
    source, data, streams = source_and_target(task, dtype)
    split = cast(data.train, dtype)
    engine = TwoLayerCNNEngine()
    jobs, references = [], []
    for strategy in HOOKED:
        target, plan = planned(task, strategy, source, dtype, streams)
        assert engine.supports(target, budget, plan, strategy) is None, strategy.instance_name
        reference = copy.deepcopy(target)
        train(reference, Split(split.x, split.y), budget, torch.Generator(), plan, strategy, donor=source)
        jobs.append(BatchJob(target, split, plan, strategy=strategy, donor=source))
        references.append(reference)
    # every job in one program: lp-ft's phase boundaries differ from job to job
    assert all(o.status == "ok" for o in engine.train(jobs, budget))
    test = Split(data.test.x.to(dtype), data.test.y.to(dtype))
    for strategy, job, reference in zip(HOOKED, jobs, references):
        ours, theirs = job.model.W.detach(), reference.W.detach()
        assert float((ours - theirs).abs().max()) <= tol * float(theirs.abs().max()), strategy.instance_name
        assert accuracy(job.model, test, "logistic") == accuracy(reference, test, "logistic"), strategy.instance_name
        if isinstance(strategy, LPFT) and strategy.fraction < 1:  # LP-FT's fresh filters trained
            assert not torch.equal(ours, source.W.detach())


def test_a_filter_frozen_in_a_phase_keeps_its_coefficients_exactly(make_task):
    task = make_task()
    budget = task.budget("target")
    source, data, streams = source_and_target(task, torch.float32)
    short = dataclasses.replace(budget, steps=40)
    for penalty in (0.0, 0.1):
        # 40 free steps, then everything frozen: bit for bit 40 steps of the plain program
        target, plan = planned(task, Phases([(40, "none"), (budget.steps - 40, "all")], penalty), source, torch.float32, streams)
        plain = copy.deepcopy(target)
        assert TwoLayerCNNEngine().train([BatchJob(target, data.train, plan, strategy=Phases([(40, "none"), (budget.steps - 40, "all")], penalty), donor=source)], budget)[0].status == "ok"
        assert TwoLayerCNNEngine().train([BatchJob(plain, data.train, plan, donor=source)], short)[0].status == "ok"
        assert torch.equal(target.W, plain.W), penalty
    # a filter frozen throughout (lp-ft's probe at 1: inherited ones never train) is its start
    strategy = LPFT(fraction=0.5, probe=1.0)
    target, plan = planned(task, strategy, source, torch.float32, streams)
    start = target.W.detach().clone()
    TwoLayerCNNEngine().train([BatchJob(target, data.train, plan, strategy=strategy, donor=source)], budget)
    inherited = plan.copy["W"]
    assert torch.equal(target.W.detach()[inherited], start[inherited])
    assert not torch.equal(target.W.detach()[~inherited], start[~inherited])


def test_the_engine_refuses_phases_and_penalties_it_cannot_express(make_task):
    task = make_task()
    budget = task.budget("target")
    source, data, streams = source_and_target(task, torch.float32)
    engine = TwoLayerCNNEngine()

    def refusal(strategy, edit=None):
        target, plan = planned(task, strategy, source, torch.float32, streams)
        if edit is not None:
            edit(plan, target)
        return engine.supports(target, budget, plan, strategy)

    assert "part of a filter" in refusal(Phases([(50, "half"), (50, "none")]))
    assert "steps, not the budget's" in refusal(Phases([(30, "none"), (30, "all")]))
    # toward_zero on fresh filters: their start is not in the training span
    assert "toward zero" in refusal(PartialFilters(fraction=0.5), lambda p, t: setattr(p, "penalty", WeightPenalty(0.01, 0.1, dict(p.copy))))
    # ... fine when the fresh filters are frozen (the pull never moves them)
    def frozen_fresh(plan, target):
        plan.freeze["W"] = ~plan.copy["W"]
        plan.penalty = WeightPenalty(0.01, 0.1, dict(plan.copy))
    assert refusal(PartialFilters(fraction=0.5), frozen_fresh) is None
    # a pulled filter that does not start at the donor's value: a mix, or a fresh filter
    assert "does not start at the donor" in refusal(L2SP(alpha=0.01), lambda p, t: p.mix(0.5, 0.5))
    def pull_fresh(plan, target):
        plan.penalty = WeightPenalty(0.01, 0.0, {"W": torch.ones_like(plan.copy["W"])})
    assert "does not start at the donor" in refusal(PartialFilters(fraction=0.5), pull_fresh)
    # a rule that is the plain copy is a copy
    assert refusal(L2SP(alpha=0.01), lambda p, t: p.init.__setitem__("W", ValueRule.copy())) is None
    def partial_pull(plan, target):
        mask = torch.zeros_like(plan.copy["W"])
        mask[..., :10] = True
        plan.penalty.inherited = {"W": mask}
    assert "part of a filter" in refusal(L2SP(alpha=0.01), partial_pull)
    # the weights are checked too: a donor the plan did not copy from is refused while training
    strategy = L2SP(alpha=0.01)
    target, plan = planned(task, strategy, source, torch.float32, streams)
    other = copy.deepcopy(source)
    with torch.no_grad():
        other.W.add_(1e-3)
    with pytest.raises(ValueError, match="does not start at the donor"):
        engine.train([BatchJob(target, data.train, plan, strategy=strategy, donor=other)], budget)
    with pytest.raises(ValueError, match="has no donor"):
        engine.train([BatchJob(target, data.train, plan, strategy=strategy)], budget)


def test_a_sweep_of_hook_strategies_runs_batched_and_equals_the_per_run_path(make_task):
    specs = specs_for(make_task(), [Scratch(), L2SP(alpha=0.01), L2SP(alpha=1.0), LPFT(fraction=0.5), AutoFraction(candidates=3)], seeds=(0,))
    ours, theirs = batched(specs), per_run(specs)
    assert {r.path for r in ours.values()} == {"batched"}
    assert {r.path for r in theirs.values()} == {"per-run"}
    assert_same_runs(ours, theirs)
    for key, result in ours.items():
        notes, reference = result.diagnostics.get("strategy"), theirs[key].diagnostics.get("strategy")
        if notes is None:
            continue
        assert {k: v for k, v in notes.items() if not k.startswith("val_loss")} == {k: v for k, v in reference.items() if not k.startswith("val_loss")}
        assert {k: v for k, v in notes.items() if k.startswith("val_loss")} == pytest.approx({k: v for k, v in reference.items() if k.startswith("val_loss")}, rel=1e-4)


def test_a_diverging_penalty_diverges_on_both_paths_at_the_same_step(make_task):
    # alpha 50 at lr 1: each step multiplies the pulled coefficients by -49; the penalty in
    # the engine's loss history finds the overflow where the per-run loop's loss does
    specs = specs_for(make_task(), [L2SP(alpha=50.0)], seeds=(0,))
    ours, theirs = batched(specs), per_run(specs)
    for key in ours:
        assert ours[key].status == theirs[key].status == "diverged"
        steps = [int(re.search(r"loss became inf at step (\d+)", r.error).group(1)) for r in (ours[key], theirs[key])]
        assert abs(steps[0] - steps[1]) <= 1, (ours[key].error, theirs[key].error)


@pytest.fixture(scope="module")
def planning(make_task):
    task = make_task(steps=60)
    streams = RandomStreams(0)
    source = task.model("source", streams.torch("source-init"))
    train(source, task.data("source", streams).train, task.budget("source"), streams.torch("source-batches"))
    return task, streams, task.data("target", streams), source


def plan_auto(planning, engine=None, wrap=None):
    task, streams, data, source = planning
    target = task.model("target", streams.torch("target-init"))
    context = plan_context(task, data.train, task.budget("target"), streams, "cpu", engine=engine)
    if wrap is not None:
        context.train_many = wrap(context.train_many)
    return AutoFraction().plan_with_data(source, target, streams.torch("plan"), context)


def test_auto_fraction_trains_its_candidates_as_one_batch_with_the_per_run_loops_result(planning):
    engine = TwoLayerCNNEngine()
    calls: list[int] = []
    original = engine.train
    engine.train = lambda jobs, budget, deadline=None: calls.append(len(jobs)) or original(jobs, budget, deadline)
    ours, theirs = plan_auto(planning, engine), plan_auto(planning)
    assert calls == [len(AutoFraction().fractions())]  # one program for every candidate
    assert torch.equal(ours.copy["W"], theirs.copy["W"])
    losses = {k for k in theirs.notes if k.startswith("val_loss")}
    assert {k: v for k, v in ours.notes.items() if k not in losses} == {k: v for k, v in theirs.notes.items() if k not in losses}
    assert {k: ours.notes[k] for k in losses} == pytest.approx({k: theirs.notes[k] for k in losses}, rel=1e-4)


def test_auto_fraction_does_not_choose_a_diverged_candidate(planning):
    chosen = plan_auto(planning).notes["fraction"]
    index = AutoFraction().fractions().index(chosen)

    def wrap(train_many):
        def diverge_the_winner(models, split, plans):
            out = train_many(models, split, plans)
            out[index] = Diverged("loss became nan at step 3")
            return out
        return diverge_the_winner

    notes = plan_auto(planning, TwoLayerCNNEngine(), wrap).notes
    assert notes["fraction"] != chosen
    assert notes[f"val_acc[{chosen:g}]"] is None and notes[f"val_loss[{chosen:g}]"] is None


class MisusesTrainMany(Strategy):
    """A plugin's plan_with_data that calls context.train_many wrongly: one plan short, or
    one model twice. Its run must fail saying so, and no other run with it."""

    name = "test-misuses-train-many"
    params = {"how": ["short", "twice"]}

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def plan_with_data(self, source, target, rng, context):
        one, two = copy.deepcopy(target), copy.deepcopy(target)
        if self.how == "short":
            context.train_many([one, two], context.train_data, [None])
        else:
            context.train_many([one, one], context.train_data, [None, None])
        return self.plan(source, target, rng)


@pytest.mark.parametrize(("how", "words"), [("short", "2 model(s) but 1 plan(s)"), ("twice", "the same model object appears twice")])
def test_train_many_misused_by_a_plugin_fails_its_run_with_a_line_that_says_how(make_task, how, words):
    from ptbench.api import RunSpec
    from ptbench.run.group import group_specs
    from ptbench.run.options import RunOptions
    from ptbench.sweep.execute import LocalExecutor

    task = make_task(steps=20)
    specs = [RunSpec(task, MisusesTrainMany(how=how), 0), RunSpec(task, Scratch(), 0)]
    results = {r.strategy: r for r in LocalExecutor().run(group_specs(specs), RunOptions())}
    bad = results[MisusesTrainMany(how=how).instance_name]
    assert bad.status == "failed" and words in bad.error, bad.error
    assert results["scratch"].status == "ok"
