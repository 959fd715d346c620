"""The batched engine gives what the per-run path gives, run for run, and the runner sends it
only what it can train exactly: strategies with a `regularizer` hook and plans it cannot
express take the per-run path, and tracing turns batching off. (Phases and weight penalties,
which it trains: tests/plugins/test_engine_hooks.py.)"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from ptbench.api import RunSpec, Split, Strategy, TransferPlan
from ptbench.run.engines import BatchJob
from ptbench.run.protocol import batched_refusal
from ptbench.tasks.signal_noise.data import PatchSplit
from ptbench.tasks.signal_noise.engine import TwoLayerCNNEngine
from ptbench.sweep.execute import LocalExecutor
from ptbench.rng import RandomStreams
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.runner import run_groups
from ptbench.strategies.full import Full
from ptbench.strategies.l2_sp import L2SP
from ptbench.strategies.lp_ft import LPFT
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.partial_layers import PartialLayers
from ptbench.strategies.reinit_head import ReinitHead
from ptbench.strategies.scratch import Scratch
from ptbench.strategies.selffer import Selffer
from ptbench.run.training import accuracy, train
from ptbench.sweep.units import make_units

STRATEGIES = [
    Scratch(),
    Full(freeze=False),
    Full(freeze=True),
    PartialFilters(fraction=0.5, freeze=False),
    PartialFilters(fraction=0.25, freeze=True),
    Selffer(freeze=False),
    L2SP(alpha=0.01),  # a weight penalty and phases: batched too (tests/plugins/test_engine_hooks.py)
    LPFT(fraction=0.5),
]
COMPARED = ("status", "source_acc", "target_acc", "target_train_acc")


def specs_for(task, strategies, seeds=(0, 1)):
    return [RunSpec(task, s, seed) for seed in seeds for s in strategies]


def per_run(specs):
    return {r.key: r for g in group_specs(specs) for r in run_groups([g], RunOptions(batched=False))}


def batched(specs, **options):
    return {r.key: r for r in LocalExecutor().run(group_specs(specs), RunOptions(**options))}


def assert_same_runs(left, right, diag_tol=2e-3):
    assert left.keys() == right.keys()
    for key in left:
        a, b = left[key], right[key]
        assert (a.status, a.error) == (b.status, b.error), key
        for name in COMPARED:
            assert getattr(a, name) == getattr(b, name), (key, name, getattr(a, name), getattr(b, name))
        # diagnostics are inner products with the weights: equal weights, equal diagnostics
        for side in ("source", "target"):
            for name, value in a.diagnostics[side].items():
                assert value == pytest.approx(b.diagnostics[side][name], rel=diag_tol, abs=diag_tol), (key, side, name)


# Every patch count (about 1 s each) runs with the slow tests; the span engine's own
# equality tests cover it in the fast set.
@pytest.mark.parametrize("patches", [pytest.param(2, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_batched_sweep_equals_the_per_run_path_run_for_run(make_task, patches):
    specs = specs_for(make_task(patches=patches), STRATEGIES)
    assert_same_runs(batched(specs), per_run(specs))


def test_runs_that_must_end_alike_are_trained_once(make_task, monkeypatch):
    task = make_task()
    engine = TwoLayerCNNEngine()
    sizes: list[int] = []
    original = engine._program
    monkeypatch.setattr(engine, "_program", lambda jobs, *rest: sizes.append(len(jobs)) or original(jobs, *rest))
    monkeypatch.setattr(type(task), "batched_engine", lambda self: engine)
    # on the two-layer CNN, partial-layers[layers=1] and reinit-head inherit what full does
    same = [Full(freeze=False), PartialLayers(layers=1, freeze=False), ReinitHead(freeze=False)]
    results = list(batched(specs_for(task, [Scratch(), *same], seeds=(0,))).values())
    assert sizes == [1, 2]  # the source model; then scratch and one of the three
    twins = [r for r in results if r.strategy != "scratch"]
    assert len({(r.target_acc, r.target_train_acc, str(r.diagnostics)) for r in twins}) == 1


def _exactly(results):
    return {r.key: (r.status, r.path, r.source_acc, r.target_acc, r.target_train_acc, r.donor_digest, repr(r.diagnostics)) for r in results}


def test_a_run_trains_to_the_same_bits_whichever_runs_share_its_program(make_task):
    """A run's numbers are its own, not its program's: the same seed and strategy train to
    the same floats first, last or alone in a program, beside any other seeds and
    strategies, so that the units may follow the worker count (`ptbench.sweep.units`) and a
    stored run never depends on what ran beside it. (torch's vectorized CPU loops leave a
    remainder shorter than a vector to scalar code, whose exp rounds differently: the
    engine pads the flat buffers of its softplus and sigmoid, `VECTOR_PAD`. Before, a
    program's last dataset trained differently from the same data anywhere else.)"""
    task = make_task(n_target=25, steps=60)
    strategies = [Scratch(), Full(freeze=False), PartialFilters(fraction=0.5, freeze=False), PartialFilters(fraction=0.25, freeze=True),
                  L2SP(alpha=0.01), LPFT(fraction=0.5)]
    options = RunOptions()
    reference = _exactly(run_groups(group_specs(specs_for(task, strategies, seeds=(0, 1, 2))), options))
    assert {v[0] for v in reference.values()} == {"ok"} and {v[1] for v in reference.values()} == {"batched"}
    for seeds, chosen in [((2,), strategies), ((1,), strategies), ((2, 0), strategies[::-1]), ((1, 2), strategies[1::2]), ((0,), strategies[:2])]:
        got = _exactly(run_groups(group_specs(specs_for(task, chosen, seeds=seeds)), options))
        assert got == {key: reference[key] for key in got}, (seeds, [s.instance_name for s in chosen])


def test_engine_weights_equal_per_run_training_float32_and_float64(make_task):
    task = make_task()
    data = task.data("target", RandomStreams(3))
    budget = task.budget("target")
    # float32: the two paths sum in different orders, and a pre-activation within rounding of
    # zero may flip one ReLU for one step (about 3e-4 of the weight scale, seen at d=200);
    # float64 shows the algorithms are the same gradient descent
    for dtype, tol in ((torch.float32, 1e-3), (torch.float64, 1e-9)):
        split = PatchSplit(*(t.to(dtype) if t.is_floating_point() else t for t in (data.train.shared, data.train.own, data.train.index, data.train.coef, data.train.y)))
        models = [task.model("target", RandomStreams(s).torch("init")).to(dtype) for s in range(3)]
        reference = [copy.deepcopy(m) for m in models]
        for model in reference:
            train(model, Split(split.x, split.y), budget, torch.Generator())
        outcomes = TwoLayerCNNEngine().train([BatchJob(m, split) for m in models], budget)
        assert all(o.status == "ok" for o in outcomes)
        test = Split(data.test.x.to(dtype), data.test.y.to(dtype))
        for ours, theirs in zip(models, reference):
            scale = float(theirs.W.detach().abs().max())
            assert float((ours.W - theirs.W).detach().abs().max()) <= tol * scale, dtype
            assert accuracy(ours, test, "logistic") == accuracy(theirs, test, "logistic")


def test_engine_accuracy_equals_the_models_own(make_task):
    task = make_task()
    data = task.data("target", RandomStreams(0))
    models = [task.model("target", RandomStreams(s).torch("init")) for s in range(3)]
    for model in models:
        train(model, data.train, task.budget("target"), torch.Generator())
    engine = TwoLayerCNNEngine()
    expected = [accuracy(m, data.test, "logistic") for m in models]
    assert engine.accuracy(models, [data.test] * 3, "logistic") == expected
    # a plain dense split (no shared factors) gives the same
    dense = Split(data.test.x.clone(), data.test.y)
    assert engine.accuracy(models, [dense] * 3, "logistic") == expected


def test_frozen_filters_stay_bit_identical(make_task):
    task = make_task()
    specs = specs_for(task, [Full(freeze=True)], seeds=(0,))
    captured = {}
    engine = TwoLayerCNNEngine()
    original = engine.train

    def spy(jobs, budget, deadline=None):
        before = [job.model.W.detach().clone() for job in jobs]
        out = original(jobs, budget, deadline)
        captured["pairs"] = [(b, job.model.W.detach().clone()) for b, job in zip(before, jobs)]
        return out

    engine.train = spy
    task_type = type(task)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_type, "batched_engine", lambda self: engine)
        results = batched(specs)
    assert all(r.status == "ok" for r in results.values())
    before, after = captured["pairs"][0]
    assert torch.equal(before, after)


class HalfFrozenFilters(Strategy):
    """Copies every filter and freezes only the first half of each one's entries: a plan the
    engine cannot express (it freezes whole filters), so it must go per-run."""

    name = "half-frozen-filters"

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        mask = torch.zeros_like(plan.copy["W"])
        mask[..., : mask.shape[-1] // 2] = True
        plan.freeze["W"] = mask
        return plan


class WeightHook(Strategy):
    """Full transfer with a `regularizer` hook (arbitrary code on the model each step): only
    the per-run loop runs it."""

    name = "weight-hook"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def regularizer(self, model, reference, plan):
        return 0.01 * ((model.W - reference["W"]) ** 2).sum()


def test_hooks_and_inexpressible_plans_take_the_per_run_path(make_task, monkeypatch):
    task = make_task()
    strategies = [Scratch(), WeightHook(), HalfFrozenFilters()]
    specs = specs_for(task, strategies, seeds=(0,))
    engine = TwoLayerCNNEngine()
    trained: list[int] = []
    original = engine.train
    monkeypatch.setattr(engine, "train", lambda jobs, budget, deadline=None: trained.append(len(jobs)) or original(jobs, budget, deadline))
    monkeypatch.setattr(type(task), "batched_engine", lambda self: engine)
    results = batched(specs)
    # the engine trained the source model, then scratch alone: the hook and the half-frozen plan ran per-run
    assert trained == [1, 1]
    assert all(r.status == "ok" for r in results.values())
    monkeypatch.undo()
    assert_same_runs(results, per_run(specs))
    half = next(r for r in results.values() if r.strategy == "half-frozen-filters")
    assert half.target_acc is not None


def test_tracing_turns_batching_off(make_task):
    traced, plain = make_task(trace=10), make_task()
    engine = plain.batched_engine()
    for task, expected in ((traced, "trajectories"), (plain, None)):
        model = task.model("target", torch.Generator().manual_seed(0))
        reason = batched_refusal(engine, task, Scratch(), model, task.budget("target"), None)
        assert (reason is None) if expected is None else (expected in reason)
    results = batched(specs_for(traced, [Scratch(), Full()], seeds=(0,)))
    assert all(r.path == "per-run" for r in results.values())
    assert all(len(r.diagnostics["trajectory"]["target"]) > 2 for r in results.values())
    assert all(r.path == "batched" for r in batched(specs_for(plain, [Scratch(), Full()], seeds=(0,))).values())


def test_a_diverging_batch_is_stored_as_diverged_like_per_run(make_task):
    task = make_task()

    class InfData(type(task)):
        name = "inf-data"

        def data(self, role, streams):
            out = super().data(role, streams)
            out.train.x[0, 0, 0] = float("inf")  # edits x in place: the engine must see it
            return out

    broken = InfData(**task.values)
    specs = specs_for(broken, [Scratch(), Full()], seeds=(0,))
    ours, theirs = batched(specs), per_run(specs)
    for key in ours:
        assert ours[key].status == theirs[key].status == "diverged"
        assert ours[key].error.startswith("source model: Diverged: loss became nan at step")


def test_a_batch_past_its_timeout_stores_timeouts(make_task):
    specs = specs_for(make_task(steps=3000), [Scratch(), Full()], seeds=(0,))
    results = batched(specs, timeout=1e-4, cache_dir=None)
    assert {r.status for r in results.values()} == {"timeout"}
    assert all("time limit" in r.error for r in results.values())


def test_patch_split_is_the_dense_data_and_follows_edits(make_task):
    data = make_task(patches=3).data("target", RandomStreams(1))
    split = data.train
    assert isinstance(split, PatchSplit)
    x = split.x
    n, patches, d = x.shape
    position = data.extras["signal_position"]
    signal = split.shared[0]
    for i in range(n):
        assert torch.equal(x[i, position[i]], split.coef[i, position[i]] * signal)
        others = [p for p in range(patches) if p != position[i]]
        assert torch.equal(x[i, others], split.own[i])
    assert PatchSplit.from_dense(split) is split
    x[0, 0, 0] += 1.0  # someone edits the dense data: the factors no longer describe it
    refactored = PatchSplit.from_dense(split)
    assert refactored is not split and torch.equal(refactored.x, x)


def test_engine_refuses_what_it_cannot_train(make_task):
    task = make_task()
    model = task.model("target", torch.Generator())
    engine = TwoLayerCNNEngine()
    budget = task.budget("target")
    assert engine.supports(model, budget, None) is None
    assert "momentum" in engine.supports(model, dataclasses.replace(budget, momentum=0.9), None)
    assert "logistic" in engine.supports(model, dataclasses.replace(budget, loss="cross_entropy"), None)
    assert "part of a filter" in engine.supports(model, budget, HalfFrozenFilters().plan(model, model, torch.Generator()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_sweep_on_cuda_equals_cpu(make_task):
    specs = specs_for(make_task(), STRATEGIES)
    on_gpu = batched(specs, device="cuda")
    on_cpu = batched(specs)
    assert {r.device for r in on_gpu.values()} == {"cuda"}
    for key, result in on_gpu.items():
        assert result.status == on_cpu[key].status == "ok"
        assert abs(result.target_acc - on_cpu[key].target_acc) <= 0.01


class ScaledFilters(Strategy):
    """Copies every filter and trains each at its own learning rate (0: frozen, up to 2x)."""

    name = "scaled-filters"

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        plan.lr_scale["W"] = torch.linspace(0.0, 2.0, 2 * target.m).reshape(2, target.m)
        return plan


def test_engine_scales_whole_filters_like_the_per_run_path(make_task):
    task = make_task()
    specs = specs_for(task, [Scratch(), ScaledFilters(), Full()])
    ours = batched(specs)
    assert {r.path for r in ours.values()} == {"batched"}
    assert_same_runs(ours, per_run(specs))
    # the weights, in float64: the engine's scaled step is the per-run loop's
    data = task.data("target", RandomStreams(3))
    budget = task.budget("target")
    split = PatchSplit(*(t.to(torch.float64) if t.is_floating_point() else t for t in (data.train.shared, data.train.own, data.train.index, data.train.coef, data.train.y)))
    model = task.model("target", RandomStreams(3).torch("init")).to(torch.float64)
    plan = ScaledFilters().plan(model, model, torch.Generator())
    plan.lr_scale["W"] = plan.lr_scale["W"].to(torch.float64)
    reference = copy.deepcopy(model)
    train(reference, Split(split.x, split.y), budget, torch.Generator(), plan)
    start = model.W.detach().clone()
    assert TwoLayerCNNEngine().train([BatchJob(model, split, plan)], budget)[0].status == "ok"
    scale = float(reference.W.detach().abs().max())
    assert float((model.W - reference.W).detach().abs().max()) <= 1e-9 * scale
    assert torch.equal(model.W.detach()[0, 0], start[0, 0])  # scale 0: bit for bit its start


def test_engine_refuses_scales_that_differ_within_a_filter(make_task):
    task = make_task()
    model = task.model("target", torch.Generator())
    budget = task.budget("target")
    plan = TransferPlan(lr_scale={"W": torch.linspace(0.5, 1.5, model.d).expand(2, model.m, model.d).clone()})
    assert "part of a filter" in TwoLayerCNNEngine().supports(model, budget, plan)
    whole = TransferPlan(lr_scale={"W": torch.full((2, model.m), 0.5)})
    assert TwoLayerCNNEngine().supports(model, budget, whole) is None


class PartlyScaledFilters(Strategy):
    """Trains the first half of every filter's entries at half the rate: not the engine's."""

    name = "partly-scaled-filters"

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        scale = torch.ones(2, target.m, target.d)
        scale[..., : target.d // 2] = 0.5
        plan.lr_scale["W"] = scale
        return plan


def test_a_run_whose_scales_differ_within_a_filter_leaves_the_span_engine_for_the_vmapped_one(make_task):
    task = make_task()
    plan = PartlyScaledFilters().plan(task.model("source", torch.Generator()), task.model("target", torch.Generator()), torch.Generator())
    assert "part of a filter" in TwoLayerCNNEngine().supports(task.model("target", torch.Generator()), task.budget("target"), plan)
    specs = specs_for(task, [Scratch(), PartlyScaledFilters()], seeds=(0,))
    results = batched(specs)  # the task's chain: span engine, then the vmapped engine
    assert {r.strategy: r.path for r in results.values()} == {"scratch": "batched", "partly-scaled-filters": "batched"}
    assert_same_runs(results, per_run(specs))
