"""Batch regularisers on the signal-noise span engine: DELTA, BSS and a plugin's batchable
regulariser train there exactly as on the per-run loop (float64: the same gradient descent,
to about 1e-15 of the weights; held here to 1e-9), with several seeds and strategies in one
program, phases, a weight penalty and frozen filters included; a regulariser without the
batchable promise is refused; a diverging run diverges where the per-run loop's does, and
a regulariser that raises fails only its own runs."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from ptbench.api import Diverged, Split, Strategy, TransferPlan
from ptbench.rng import RandomStreams
from ptbench.run.engines import BatchJob
from ptbench.run.training import accuracy, train
from ptbench.run.vmapped import VmapEngine
from ptbench.strategies.bss import BSS
from ptbench.strategies.delta import Delta
from ptbench.strategies.full import Full
from ptbench.strategies.l2_sp import L2SP
from ptbench.strategies.lp_ft import LPFT
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.tasks.signal_noise.engine import TwoLayerCNNEngine

from test_engine import assert_same_runs, batched, per_run, specs_for
from test_engine_hooks import cast, planned, source_and_target

#: 12 target examples: BSS's smallest singular value of the [12, 40] feature matrix is well
#: away from 0 (at 40 examples it is ~1e-15 and BSS trains like `full`, which would test nothing)
N_TARGET = 12


class _Shrink:
    """A plugin's batchable regulariser that reads every field of the batch: the output with
    y (a margin term), the last feature layer named by `model.feature_layers()` weighted by
    the plan's copy mask (a plan tensor, under vmap), x (a constant part, in the loss history
    only) and the step."""

    batchable_regularizer = True

    def batch_regularizer(self, batch):
        layer = batch.model.feature_layers()[-1]
        features = batch.features[layer]
        weight = 0.5 + batch.plan.copy["W"].any(dim=-1).to(features.dtype)[None, :, :, None] if "W" in batch.plan.copy else 1.0
        margin = torch.tanh(batch.y * batch.output).mean()
        scale = 1.0 if batch.step < 30 else 0.5
        return scale * (0.05 * (weight * features).pow(2).mean() - 0.02 * margin) + 1e-3 * batch.x.pow(2).mean()


class ShrinkFrozen(_Shrink, PartialFilters):
    """Half the filters inherited and frozen: their features come from their start (A0)."""

    name = "shrink-frozen"


class ShrinkPhases(_Shrink, LPFT):
    """LP-FT's phases under the regulariser: the inherited filters' rate switches at the probe."""

    name = "shrink-phases"


class ShrinkPull(_Shrink, L2SP):
    """L2-SP's pull toward the donor and the regulariser in one loss."""

    name = "shrink-pull"


class Unpromised(Strategy):
    """A batch regulariser that does not declare `batchable_regularizer`."""

    name = "unpromised"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch):
        return 0.01 * batch.features["conv"].pow(2).mean()


class Promised(Unpromised):
    name = "promised"
    batchable_regularizer = True


class OnePerExample(Promised):
    """Returns one penalty per example: the per-run loop raises, so the run fails."""

    name = "one-per-example"

    def batch_regularizer(self, batch):
        return F.softplus(batch.output)


class ReadsWeights(Promised):
    """Declares batchable_regularizer but reads batch.model's parameters: the promise broken.
    Per run the model is the run's own, so the term is what its author meant; in a batched
    program it would be some other run's weights, so the engine must not take it silently."""

    name = "reads-weights"

    def batch_regularizer(self, batch):
        return 0.01 * batch.model.W.pow(2).sum()


class SlowBSS(BSS):
    """BSS whose plan scales every filter's learning rate by `scale` (not a parameter: two
    instances with different scales share a key, so they are one group)."""

    name = "slow-bss"
    scale = 1.0

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        plan.lr_scale["W"] = torch.tensor(self.scale)
        return plan


def slow_bss(scale):
    strategy = SlowBSS(eta=100.0)
    strategy.scale = scale
    return strategy


#: The two ways the engine calls a group's regulariser: once per job (groups below
#: `vmap_jobs`, the quick suite's units of a seed or two) and one vmapped call for the group.
ENGINES = {"plain calls": dict(vmap_jobs=10**6), "vmapped": dict(vmap_jobs=1)}


def program(task, strategies, seeds, dtype=torch.float64, dense=False, budget=None):
    """Every strategy of every seed trained as one span-engine program (each way of calling
    the regularisers, from the same starts) and, one by one, by the per-run loop:
    {way: [(name, job, reference or the exception it raised, test split, outcome)]}."""
    budget = budget or task.budget("target")
    rows = []
    for seed in seeds:
        source, data, streams = source_and_target(task, dtype, seed)
        split = cast(data.train, dtype)
        if dense:  # a plain split: factored trivially, every patch its own basis vector
            split = Split(split.x.clone(), split.y)
        for strategy in strategies:
            target, plan = planned(task, strategy, source, dtype, streams)
            assert TwoLayerCNNEngine().supports(target, budget, plan, strategy) is None, strategy.instance_name
            reference = copy.deepcopy(target)
            try:
                train(reference, Split(split.x, split.y), budget, torch.Generator(), plan, strategy, donor=source)
            except Exception as err:  # noqa: BLE001 - compared with the engine's outcome
                reference = err
            rows.append((f"seed {seed} {strategy.instance_name}", BatchJob(target, split, plan, strategy=strategy, donor=source), reference, data.test))
    out = {}
    for way, options in ENGINES.items():
        jobs = [dataclasses.replace(job, model=copy.deepcopy(job.model)) for _, job, _, _ in rows]
        outcomes = TwoLayerCNNEngine(**options).train(jobs, budget)
        out[way] = [(name, job, reference, test, outcome) for (name, _, reference, test), job, outcome in zip(rows, jobs, outcomes)]
    return out


def assert_equal_to_per_run(programs, dtype=torch.float64, tol=1e-9):
    for way, results in programs.items():
        for name, job, reference, test, outcome in results:
            assert outcome.status == "ok", (way, name, outcome.error)
            ours, theirs = job.model.W.detach(), reference.W.detach()
            torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol, msg=f"{way}: {name}")
            split = Split(test.x.to(dtype), test.y.to(dtype))
            assert accuracy(job.model, split, "logistic") == accuracy(reference, split, "logistic"), (way, name)


def weights(results, label):
    return next(job.model.W.detach() for name, job, *_ in results if name == label)


def outcomes(programs):
    """{(way, strategy name): (job, reference, outcome)} of a one-seed program."""
    return {(way, name.split(" ", 2)[2]): (job, reference, outcome) for way, results in programs.items() for name, job, reference, _, outcome in results}


@pytest.mark.slow  # float64 equality of several programs: ~1-2 s; the float32 runner test stays in the quick set
def test_delta_and_bss_in_one_program_equal_the_per_run_loop(make_task):
    strategies = [Delta(), Delta(alpha=1.0), BSS(), BSS(k=2), BSS(eta=0.01), Full()]
    programs = program(make_task(n_target=N_TARGET), strategies, seeds=(0, 1, 2))
    assert_equal_to_per_run(programs)
    # the regularisers moved the weights (so the equality above is not full's, twice)
    results = programs["vmapped"]
    for seed in (0, 1, 2):
        full = weights(results, f"seed {seed} full")
        for strategy in strategies[:-1]:
            assert float((weights(results, f"seed {seed} {strategy.instance_name}") - full).abs().max()) > 1e-4, (seed, strategy.instance_name)


@pytest.mark.parametrize("patches, dense", [(3, False), (2, True)], ids=["two-own-patches", "dense-split"])
def test_other_patch_layouts_equal_the_per_run_loop(make_task, patches, dense):
    # three patches: two own vectors per example (the engine's Q > 1); a dense split: no
    # shared vector, every patch its own column
    assert_equal_to_per_run(program(make_task(n_target=N_TARGET, patches=patches), [Delta(alpha=1.0), BSS(eta=0.01)], seeds=(0,), dense=dense))


@pytest.mark.slow  # float64 equality of several programs: ~1-2 s; the float32 runner test stays in the quick set
def test_a_plugins_batchable_regularizer_with_frozen_filters_phases_and_a_pull_equals_the_per_run_loop(make_task):
    strategies = [
        ShrinkFrozen(fraction=0.5, freeze=True),
        ShrinkPhases(fraction=0.5, probe=0.4),
        ShrinkPull(alpha=0.05),
        Delta(),
    ]
    programs = program(make_task(n_target=N_TARGET), strategies, seeds=(0, 1))
    assert_equal_to_per_run(programs)
    for results in programs.values():
        for name, job, reference, test, outcome in results:
            if " shrink-frozen" in name:  # the frozen, inherited filters kept their start exactly
                frozen = job.plan.freeze["W"]
                assert torch.equal(job.model.W.detach()[frozen], reference.W.detach()[frozen])


def test_float32_runs_through_the_runner_are_the_span_engines_with_the_per_run_paths_accuracies(make_task, monkeypatch):
    def refuse(self, jobs, budget, deadline=None):
        raise AssertionError("the vmapped engine trained a run the span engine takes")

    monkeypatch.setattr(VmapEngine, "train", refuse)
    specs = specs_for(make_task(n_target=N_TARGET), [Delta(), BSS(), Full()], seeds=(0,))
    ours = batched(specs)
    assert {r.path for r in ours.values()} == {"batched"}
    monkeypatch.undo()
    assert_same_runs(ours, per_run(specs))


def test_a_batch_regularizer_without_the_promise_is_refused_with_a_reason(make_task):
    task = make_task()
    budget = task.budget("target")
    source = task.model("source", torch.Generator().manual_seed(0))
    target = task.model("target", torch.Generator().manual_seed(1))
    plan = TransferPlan.full(source, target)
    engine = TwoLayerCNNEngine()
    reason = engine.supports(target, budget, plan, Unpromised())
    assert reason is not None and "batchable_regularizer" in reason and "unpromised" in reason
    assert engine.supports(target, budget, plan, Promised()) is None  # the declaration is what counts
    assert "batchable_regularizer" in task.batched_engine().supports(target, budget, plan, Unpromised())  # per run
    # a batch regulariser under a budget the engine cannot run is refused for that budget
    assert "momentum" in engine.supports(target, dataclasses.replace(budget, momentum=0.9), plan, Promised())
    with pytest.raises(ValueError, match="batchable_regularizer"):
        engine.train([BatchJob(target, task.data("target", RandomStreams(0)).train, plan, strategy=Unpromised())], budget)


def test_delta_without_a_donor_is_an_error(make_task):
    task = make_task()
    source = task.model("source", torch.Generator().manual_seed(0))
    target = task.model("target", torch.Generator().manual_seed(1))
    split = task.data("target", RandomStreams(0)).train
    with pytest.raises(ValueError, match="needs the donor's features"):
        TwoLayerCNNEngine().train([BatchJob(target, split, TransferPlan.full(source, target), strategy=Delta())], task.budget("target"))


def test_a_diverging_regularised_run_diverges_at_the_per_run_loops_step_and_alone(make_task):
    # lr 20 and huge weights on the terms: DELTA's and BSS's terms overflow (the loss history
    # holds them, as the per-run loop's loss does); full in the same program trains on
    task = make_task(n_target=N_TARGET)
    budget = dataclasses.replace(task.budget("target"), lr=20.0)
    for (way, name), (job, reference, outcome) in outcomes(program(task, [Delta(alpha=100.0), BSS(eta=100.0), Full()], seeds=(0,), budget=budget)).items():
        if name == "full":
            assert outcome.status == "ok" and not isinstance(reference, Exception)
            torch.testing.assert_close(job.model.W.detach(), reference.W.detach(), rtol=1e-9, atol=1e-9)
            continue
        assert isinstance(reference, Diverged), (name, reference)
        assert outcome.status == "diverged", (way, name, outcome.error)
        steps = [int(re.search(r"loss became (?:inf|nan) at step (\d+)", text).group(1)) for text in (outcome.error, str(reference))]
        assert abs(steps[0] - steps[1]) <= 1, (way, name, outcome.error, str(reference))  # overflow: rounding may move it a step


def test_a_regularizer_that_raises_fails_its_runs_only(make_task):
    task = make_task(n_target=N_TARGET)
    runs = outcomes(program(task, [OnePerExample(), Delta()], seeds=(0,)))
    for way in ENGINES:
        job, reference, outcome = runs[way, "one-per-example"]
        assert isinstance(reference, ValueError) and "not a scalar tensor" in str(reference)  # the per-run loop's failure
        assert outcome.status == "failed" and "not a scalar tensor" in outcome.error and "step 0" in outcome.error, (way, outcome.error)
        job, reference, outcome = runs[way, "delta[alpha=0.1]"]
        assert outcome.status == "ok", (way, outcome.error)
        torch.testing.assert_close(job.model.W.detach(), reference.W.detach(), rtol=1e-9, atol=1e-9)


def test_a_diverged_run_does_not_take_down_its_group(make_task):
    # two runs of one regulariser, one vmapped call: the first diverges at step ~37 and its
    # weights keep growing, until an SVD of its features fails to converge (LAPACK) for the
    # whole batch at step ~72; the engine reads 0 for a run once its loss was not finite,
    # so the other run trains on, as it does alone on the per-run loop
    task = make_task(n_target=N_TARGET)
    budget = dataclasses.replace(task.budget("target"), lr=1000.0)
    for way, results in program(task, [slow_bss(1.0), slow_bss(1e-7)], seeds=(0,), budget=budget).items():
        (_, _, diverging, _, first), (_, job, reference, _, second) = results
        assert isinstance(diverging, Diverged) and first.status == "diverged", (way, diverging, first.error)
        assert second.status == "ok", (way, second.error)
        torch.testing.assert_close(job.model.W.detach(), reference.W.detach(), rtol=1e-9, atol=1e-9)


def test_a_regulariser_that_reads_the_models_weights_despite_its_promise_fails_saying_so(make_task):
    """The engines hand a batchable regulariser a model of structure only (parameters on the
    meta device): a term built from its weights is caught, its runs fail with a line that
    says what the promise is, and the other runs of the program are unaffected."""
    task = make_task(n_target=N_TARGET)
    runs = outcomes(program(task, [ReadsWeights(), Delta()], seeds=(0,)))
    for way in ENGINES:
        job, reference, outcome = runs[way, "reads-weights"]
        assert not isinstance(reference, Exception)  # per run it is a valid penalty
        assert outcome.status == "failed" and "batch.model's parameters" in outcome.error and "batchable_regularizer" in outcome.error, (way, outcome.error)
        job, reference, outcome = runs[way, "delta[alpha=0.1]"]
        assert outcome.status == "ok", (way, outcome.error)
        torch.testing.assert_close(job.model.W.detach(), reference.W.detach(), rtol=1e-9, atol=1e-9)
