"""The vmapped engine (ptbench/run/vmapped.py) trains what the per-run loop trains: for the
image CNNs, every kind of plan (copies, freezes, learning-rate scales, value rules, weight
penalties), phases and batch regularisers, under SGD with momentum and AdamW, gives the
per-run loop's weights (float64: within 1e-5; in fact to about 1e-14) and its accuracies; a
diverging run fails alone with the per-run loop's message; what vmap cannot run is refused
(BatchNorm buffers, batch regularisers without the batchable promise) or, found only on a
program's first step, trained per run; and through the runner the runs come out batched with
the accuracies of the per-run path. The fast paths: the CNN's stacked forward equals its
forward_features under vmap (float64, gradients too), its pooling before the ReLU is ReLU
then pooling bit for bit (per-run weights unchanged), the flat optimiser update is the
per-parameter one bit for bit, and jobs frozen throughout form programs of their own."""

from __future__ import annotations

import copy
import dataclasses
import time

import pytest
import torch
from torch import nn

from ptbench.api import RunSpec, RunTimeout, Split, Strategy, TrainBudget, TransferLayer, TransferModel
from ptbench.registry import default_registry
from ptbench.rng import RandomStreams
from ptbench.run.engines import BatchJob, EngineChain
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.protocol import batched_refusal, plan_context, plan_target
from ptbench.run.runner import run_groups
from ptbench.run.training import Diverged, accuracy, train
from ptbench.run.vmapped import VmapEngine
from ptbench.spec import parse_spec
from ptbench.tasks.images.models import ResNet18

REGISTRY = default_registry()

#: One instance of every kind of plan and hook the engine batches.
STRATEGIES = [
    "scratch",
    "full[freeze=True]",
    "partial-filters[fraction=0.5]",
    "partial-filters[fraction=0.25,freeze=True]",
    "discriminative-lr",  # learning-rate scales
    "shrink-perturb",  # a value rule
    "l2-sp[alpha=0.5,beta=0.1]",  # a weight penalty, toward the donor and toward zero
    "lp-ft[fraction=0.5]",  # phases
    "delta",  # a batch regulariser with the donor's features
    "bss",  # a batch regulariser (an SVD of the batch features)
]


def strategy(spec: str) -> Strategy:
    name, values = parse_spec(spec)
    return REGISTRY.strategy(name)(**{k: v[0] if isinstance(v, list) else v for k, v in values.items()})


def task(spec: str, **values):
    name, given = parse_spec(spec)
    return REGISTRY.task(name)(**{**{k: v[0] if isinstance(v, list) else v for k, v in given.items()}, **values})


def f64(split: Split) -> Split:
    return Split(split.x.double(), split.y)


def budgets(base: TrainBudget) -> dict[str, TrainBudget]:
    return {
        "adam": dataclasses.replace(base, optimizer="adam", lr=0.01, weight_decay=0.01),
        "sgd": dataclasses.replace(base, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    }


def planned_jobs(the_task, specs, seeds, budget, dtype=torch.float64):
    """(jobs, per-run references trained by `training.train`, test splits): every strategy
    of every seed planned by the protocol against a briefly trained donor."""
    jobs, refs, tests = [], [], []
    for seed in seeds:
        streams = RandomStreams(seed)
        source, target = the_task.data("source", streams), the_task.data("target", streams)
        convert = f64 if dtype == torch.float64 else (lambda s: s)
        source_train, train_split, test_split = convert(source.train), convert(target.train), convert(target.test)
        donor = the_task.model("source", streams.torch("source-init")).to(dtype)
        train(donor, source_train, the_task.budget("source"), streams.torch("source-batches"))
        for spec in specs:
            strat = strategy(spec)
            model = the_task.model("target", streams.torch("target-init")).to(dtype)
            plan = plan_target(strat, donor, model, streams, plan_context(the_task, train_split, budget, streams, "cpu"))
            ref = copy.deepcopy(model)
            try:
                train(ref, train_split, budget, streams.torch("target-batches"), plan, strat, donor=donor)
                refs.append((ref, None))
            except Diverged as err:
                refs.append((ref, str(err)))
            jobs.append(BatchJob(model, train_split, plan, batches=streams.torch("target-batches"), strategy=strat, donor=donor))
            tests.append(test_split)
    return jobs, refs, tests


def assert_engine_equals_per_run(jobs, refs, tests, budget, tol=1e-5):
    engine = VmapEngine(min_jobs=1)  # programs of one job too: the cross-domain test has them
    for job in jobs:
        assert engine.supports(job.model, budget, job.plan, job.strategy) is None
    outcomes = engine.train(jobs, budget)
    assert engine.fallbacks == []
    accs = engine.accuracy([job.model for job in jobs], tests, budget.loss)
    for job, (ref, error), outcome, acc, test in zip(jobs, refs, outcomes, accs, tests):
        name = job.strategy.instance_name
        assert (outcome.status, outcome.error) == (("ok", None) if error is None else ("diverged", error)), name
        if error is not None:
            continue
        for (pname, mine), theirs in zip(job.model.named_parameters(), ref.parameters()):
            assert float((mine - theirs).detach().abs().max()) <= tol, (name, pname)
        assert acc == accuracy(ref, test, budget.loss), name
    return outcomes


# Both optimisers (about 9 s together) run with the slow tests; `-m "not slow"` keeps the
# cross-domain equality and the smaller checks.
@pytest.mark.parametrize("optimizer", [pytest.param("adam", marks=pytest.mark.slow), pytest.param("sgd", marks=pytest.mark.slow)])
def test_digits_every_plan_and_hook_equals_the_per_run_loop_float64(optimizer):
    the_task = task("digits-split[width=8,source_steps=8,target_steps=10]")
    budget = budgets(the_task.budget("target"))[optimizer]
    assert_engine_equals_per_run(*planned_jobs(the_task, STRATEGIES, (0, 1), budget), budget)


@pytest.mark.slow  # about 1.3 s; the digits equality above covers the engine in the fast set
def test_cross_domain_other_cnn_equals_the_per_run_loop_float64():
    # another SmallCNN (width 4, depth 3: an unpooled last conv), a donor with another head
    # (3 texture classes against 10 digits), full-batch SGD with momentum (batch > split)
    pytest.importorskip("skimage")
    the_task = task("cross-domain[width=4,depth=3,n_target=4,source_steps=5,target_steps=8,pool=40,n_test=20]")
    base = budgets(the_task.budget("target"))
    for budget in (dataclasses.replace(base["sgd"], batch_size=64), base["adam"]):
        assert_engine_equals_per_run(*planned_jobs(the_task, STRATEGIES[1:], (0,), budget), budget)


def test_a_diverging_job_fails_alone_with_the_per_run_message():
    the_task = task("digits-split[width=8,source_steps=4,target_steps=8]")
    budget = budgets(the_task.budget("target"))["sgd"]
    jobs, refs, tests = planned_jobs(the_task, ["scratch", "full"], (0,), budget)
    # a third job, at a learning rate 10^30 times the budget's: it must blow up
    blow = copy.deepcopy(jobs[1])
    blow.plan = copy.deepcopy(blow.plan)
    blow.plan.lr_scale = {name: torch.tensor(1e30) for name, _ in blow.model.named_parameters()}
    blow.batches = RandomStreams(0).torch("target-batches")
    ref = copy.deepcopy(blow.model)
    with pytest.raises(Diverged) as err:
        train(ref, blow.data, budget, RandomStreams(0).torch("target-batches"), blow.plan, blow.strategy, donor=blow.donor)
    outcomes = assert_engine_equals_per_run(jobs + [blow], refs + [(ref, str(err.value))], tests + [tests[0]], budget)
    assert [o.status for o in outcomes] == ["ok", "ok", "diverged"]
    assert outcomes[2].error.startswith("loss became") or "not finite after training" in outcomes[2].error, outcomes[2].error


def test_refuses_batchnorm_and_unpromised_batch_regularisers():
    engine = VmapEngine()
    budget = TrainBudget(steps=2, lr=0.01, optimizer="adam", loss="cross_entropy", batch_size=4)
    resnet = ResNet18(3, 4, torch.Generator().manual_seed(0), width=4)
    assert "buffers" in engine.supports(resnet, budget, None, None)

    class Unpromised(strategy("delta").__class__):
        name = "delta-unpromised"
        batchable_regularizer = False

    cnn = task("digits-split[width=8]").model("target", torch.Generator().manual_seed(0))
    assert "batchable_regularizer" in engine.supports(cnn, budget, None, Unpromised())
    assert engine.supports(cnn, budget, None, strategy("delta")) is None
    assert "optimizer" in engine.supports(cnn, dataclasses.replace(budget, optimizer="lbfgs"), None, None)
    # the protocol sends a ResNet-18 task's runs per run: it has no engine at all
    assert task("digits-split[arch=resnet18,width=4]").batched_engine() is None


def test_a_program_past_its_deadline_raises_run_timeout():
    the_task = task("digits-split[width=8]")
    budget = the_task.budget("target")
    model = the_task.model("target", torch.Generator().manual_seed(0))
    data = the_task.data("target", RandomStreams(0)).train
    with pytest.raises(RunTimeout, match="time limit at step 0"):
        VmapEngine(min_jobs=1).train([BatchJob(model, data, batches=torch.Generator().manual_seed(0))], budget, deadline=time.monotonic() - 1)


class ItemModel(TransferModel):
    """A linear model whose forward reads a number out of a tensor (`.item()`), which vmap
    cannot batch: the engine finds out on the first step and trains it per run."""

    def __init__(self, generator):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 4, generator=generator))

    def forward(self, x):
        return self.lin(x) * (1.0 + 0.0 * float(x.sum().item()))

    def transfer_layers(self):
        return [TransferLayer("lin", ("lin.weight", "lin.bias"), (3,), head=True)]


def test_what_vmap_cannot_run_trains_per_run_with_the_same_result():
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g))
    budget = TrainBudget(steps=5, lr=0.1, optimizer="sgd", loss="cross_entropy", batch_size=8, momentum=0.9)
    models = [ItemModel(torch.Generator().manual_seed(s)) for s in range(2)]
    refs = [copy.deepcopy(m) for m in models]
    for ref in refs:
        train(ref, data, budget, torch.Generator().manual_seed(7))
    engine = VmapEngine()
    outcomes = engine.train([BatchJob(m, data, batches=torch.Generator().manual_seed(7)) for m in models], budget)
    assert [o.status for o in outcomes] == ["ok", "ok"] and len(engine.fallbacks) == 1
    for model, ref in zip(models, refs):
        assert torch.equal(model.lin.weight, ref.lin.weight)


class SpareParameter(TransferModel):
    """A linear model with a parameter its forward never reads: torch.optim skips it (no
    gradient, so no weight decay and no Adam step), and so must the engine."""

    def __init__(self, generator):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.spare = nn.Parameter(torch.randn(5, generator=generator))
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, 4, generator=generator))

    def forward(self, x):
        return self.lin(x)

    def transfer_layers(self):
        return [TransferLayer("lin", ("lin.weight", "lin.bias"), (3,), head=True)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_parameter_without_gradient_is_skipped_as_torch_optim_skips_it(optimizer):
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(20, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g))
    budget = TrainBudget(steps=6, lr=0.1, optimizer=optimizer, loss="cross_entropy", batch_size=8, momentum=0.9, weight_decay=0.1)
    models = [SpareParameter(torch.Generator().manual_seed(s)).double() for s in range(2)]
    refs = [copy.deepcopy(m) for m in models]
    for ref in refs:
        train(ref, data, budget, torch.Generator().manual_seed(3))
    engine = VmapEngine()
    assert all(o.status == "ok" for o in engine.train([BatchJob(m, data, batches=torch.Generator().manual_seed(3)) for m in models], budget))
    for model, ref in zip(models, refs):
        assert torch.equal(model.spare, ref.spare)
        assert float((model.lin.weight - ref.lin.weight).detach().abs().max()) < 1e-12


def test_a_program_of_one_job_trains_on_the_per_run_loop(monkeypatch):
    the_task = task("digits-split[width=8,source_steps=4,target_steps=6]")
    budget = the_task.budget("target")
    jobs, refs, tests = planned_jobs(the_task, ["full", "delta"], (0,), budget, dtype=torch.float32)
    engine = VmapEngine()
    monkeypatch.setattr(engine, "_program", lambda *a: pytest.fail("a program of one job was vmapped"))
    assert all(o.status == "ok" for o in engine.train(jobs[1:], budget))  # delta alone
    assert all(torch.equal(a, b) for a, b in zip(jobs[1].model.parameters(), refs[1][0].parameters()))


def test_engine_chain_sends_each_job_to_the_first_engine_that_takes_it():
    class Refuses(VmapEngine):
        def supports(self, model, budget, plan, strategy=None):
            return "never" if strategy is not None and strategy.name == "bss" else super().supports(model, budget, plan, strategy)

    the_task = task("digits-split[width=8,source_steps=4,target_steps=6]")
    budget = the_task.budget("target")
    jobs, refs, tests = planned_jobs(the_task, ["full", "bss"], (0,), budget, dtype=torch.float32)
    first, second = Refuses(), VmapEngine()
    chain = EngineChain([first, second])
    assert chain.supports(jobs[1].model, budget, jobs[1].plan, jobs[1].strategy) is None
    assert all(o.status == "ok" for o in chain.train(jobs, budget))
    trained = chain.trained_by
    assert trained[jobs[0].model] is first and trained[jobs[1].model] is second
    assert chain.accuracy([j.model for j in jobs], tests, budget.loss) == [accuracy(j.model, t, budget.loss) for j, t in zip(jobs, tests)]


@pytest.mark.slow
def test_through_the_runner_runs_are_batched_with_the_per_run_accuracies():
    the_task = task("digits-split[width=8,source_steps=20,target_steps=12]")
    specs = [RunSpec(the_task, strategy(s), seed) for seed in (0, 1) for s in ["scratch", "full", "l2-sp", "lp-ft[fraction=0.5]", "delta", "bss"]]

    def results(batched):
        return {r.key: r for g in group_specs(specs) for r in run_groups([g], RunOptions(batched=batched))}

    per_run, batched = results(False), results(True)
    engine = the_task.batched_engine()
    assert isinstance(engine, VmapEngine) and batched_refusal(engine, the_task, specs[-1].strategy, the_task.model("target", torch.Generator()), the_task.budget("target"), None) is None
    for key, ref in per_run.items():
        mine = batched[key]
        assert (ref.path, mine.path) == ("per-run", "batched"), key
        assert (mine.status, mine.source_acc, mine.target_acc, mine.target_train_acc) == (ref.status, ref.source_acc, ref.target_acc, ref.target_train_acc), key


def test_a_run_trains_to_the_same_bits_in_any_program_of_two_or_more_groups():
    """What lets the units follow the worker count (`ptbench.sweep.units`): a seed's runs,
    first or last in a program of two, three or four seeds, beside all strategies or some,
    give the same floats. (A unit of one group does not: its donor trains on the per-run
    loop, which UNIT_MIN_GROUPS keeps from happening where a variant has two groups.)"""
    the_task = task("digits-split[width=8,source_steps=20,target_steps=12]")
    names = ["scratch", "full", "partial-filters[fraction=0.5]", "l2-sp", "lp-ft[fraction=0.5]", "delta"]

    def exactly(seeds, chosen):
        specs = [RunSpec(the_task, strategy(s), seed) for seed in seeds for s in chosen]
        return {r.key: (r.status, r.path, r.source_acc, r.target_acc, r.target_train_acc, r.donor_digest, repr(r.diagnostics))
                for r in run_groups(group_specs(specs), RunOptions())}

    reference = exactly((0, 1, 2, 3), names)
    assert {v[1] for v in reference.values()} == {"batched"}
    for seeds, chosen in [((0, 1), names), ((3, 2), names[::-1]), ((1, 3, 0), names[1::2])]:
        got = exactly(seeds, chosen)
        assert got == {key: reference[key] for key in got}, (seeds, chosen)


def test_a_program_too_large_for_one_chunk_is_cut_evenly_and_no_job_is_left_alone():
    """Jobs beyond what one program holds are cut into chunks of equal size (give or take
    one), not filled up with a remainder: 4 jobs at most 3 to a program are 2 + 2, each job
    trained to the bits a program of 2 gives it, where 3 + 1 trained the last one alone, on
    the per-run loop (found by a review: the remainder, and so the last seed's donor,
    followed the worker count)."""
    the_task = task("digits-split[width=4,depth=2,source_steps=4,target_steps=6]")
    budget = the_task.budget("target")
    specs = ["full", "partial-filters[fraction=0.5]"]

    def trained(programs, engine):
        jobs = planned_jobs(the_task, specs, (0, 1), budget, dtype=torch.float32)[0]
        for program in programs:
            assert all(o.status == "ok" for o in engine.train([jobs[i] for i in program], budget))
        return [[p.detach().clone() for p in job.model.parameters()] for job in jobs]

    capped = VmapEngine(max_jobs=3)
    monkeypatched = []
    per_run = capped._per_run
    capped._per_run = lambda chunk, *a: (monkeypatched.append(len(chunk)), per_run(chunk, *a))
    together = trained([range(4)], capped)
    assert monkeypatched == []  # no job was left to the per-run loop
    pairs = trained([(0, 1), (2, 3)], VmapEngine())
    for mine, theirs in zip(together, pairs):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


# --------------------------------------------------------------------------- the fast paths


def stacked_and_vmapped(model, J, x, seed=0):
    """(stacked_forward_features, vmap of forward_features) of J perturbed copies of `model`
    on x [J, N, ...], with the gradients of one random functional of each."""
    from torch.func import functional_call, vmap

    from ptbench.run.vmapped import _Method

    g = torch.Generator().manual_seed(seed)
    base = dict(model.named_parameters())
    P = {name: (p.detach()[None] + 0.1 * torch.randn((J, *p.shape), generator=g, dtype=p.dtype)).requires_grad_() for name, p in base.items()}
    caller = _Method(model, "forward_features")
    results = []
    for run in (lambda: model.stacked_forward_features(P, x), lambda: vmap(lambda p, xb: functional_call(caller, {"model." + k: v for k, v in p.items()}, (xb,)))(P, x)):
        out, features = run()
        weights = torch.Generator().manual_seed(seed + 1)
        total = (out * torch.randn(out.shape, generator=weights, dtype=out.dtype)).sum()
        total = total + sum((f * torch.randn(f.shape, generator=weights, dtype=f.dtype)).sum() for f in features.values())
        grads = torch.autograd.grad(total, list(P.values()))
        results.append((out.detach(), {k: v.detach() for k, v in features.items()}, grads))
    return results


@pytest.mark.parametrize("spec", ["digits-split[width=8]", "digits-split[width=4,depth=3]", "digits-split[width=3,depth=1]"])
def test_stacked_forward_equals_vmapped_forward_features_float64(spec):
    # the engine's fast path (SmallCNN.stacked_forward_features: grouped, channels-last) is
    # the model's own forward_features under vmap: outputs, features and their gradients
    model = task(spec).model("target", torch.Generator().manual_seed(0)).double()
    x = torch.randn(3, 7, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out, feats, grads), (ref_out, ref_feats, ref_grads) = stacked_and_vmapped(model, 3, x)
    assert out.shape == ref_out.shape == (3, 7, 5) and feats.keys() == ref_feats.keys()
    assert float((out - ref_out).abs().max()) < 1e-12
    for name in feats:
        assert feats[name].shape == ref_feats[name].shape and float((feats[name] - ref_feats[name]).abs().max()) < 1e-12, name
    for mine, theirs in zip(grads, ref_grads):
        assert float((mine - theirs).abs().max()) < 1e-10


def test_pooling_before_the_relu_is_relu_then_pooling_bit_for_bit():
    # SmallCNN pools before its ReLU (a quarter of the ReLU's work): with ties at positive
    # values, at zero and below it, values and gradients equal ReLU-then-pool's exactly
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, 8, 8, generator=g)
    x[:, :2, :4, :4] = 0.75  # positive ties
    x[:, 2:4, 2:6, 2:6] = 0.0  # ties at zero
    x[:, 4:, :4, 4:] = -0.5  # ties below zero
    weights = torch.randn(8, 6, 4, 4, generator=g)
    outs, grads = [], []
    for order in ("relu-pool", "pool-relu"):
        xr = x.clone().requires_grad_()
        y = torch.nn.functional.max_pool2d(torch.relu(xr), 2) if order == "relu-pool" else torch.relu(torch.nn.functional.max_pool2d(xr, 2))
        outs.append(y.detach())
        grads.append(torch.autograd.grad((y * weights).sum(), xr)[0])
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])

    # and a per-run training of the digits CNN gives the weights it gave with ReLU first
    from ptbench.tasks.images.models import SmallCNN

    def relu_first(self, x):
        features = {}
        for i, (conv, pool) in enumerate(zip(self.convs, self.pools)):
            x = torch.relu(conv(x))
            if pool:
                x = torch.nn.functional.max_pool2d(x, 2)
            features[f"conv{i + 1}"] = x
        return self.head(x).flatten(1), features

    the_task = task("digits-split[width=8,source_steps=30]")
    data = the_task.data("source", RandomStreams(0)).train
    trained = []
    for forward in (SmallCNN.forward_features, relu_first):
        model = the_task.model("source", torch.Generator().manual_seed(0))
        model.forward_features = forward.__get__(model)
        train(model, data, the_task.budget("source"), torch.Generator().manual_seed(1))
        trained.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*trained))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_flat_update_is_the_per_parameter_update_bit_for_bit(optimizer):
    # one flat tensor for every trained stack: the same arithmetic per entry, in float32
    the_task = task("digits-split[width=8,source_steps=4,target_steps=12]")
    budget = budgets(the_task.budget("target"))[optimizer]
    specs = ["scratch", "partial-filters[fraction=0.5,freeze=True]", "discriminative-lr", "l2-sp[alpha=0.5,beta=0.1]", "lp-ft[fraction=0.5]"]
    jobs, _, _ = planned_jobs(the_task, specs, (0,), budget, dtype=torch.float32)
    weights = []
    for flat in (True, False):
        mine = copy.deepcopy(jobs)
        engine = VmapEngine(min_jobs=1)
        engine.flat = flat
        assert all(o.status == "ok" for o in engine.train(mine, budget))
        weights.append([p.detach().clone() for job in mine for p in job.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


@pytest.mark.parametrize("optimizer", ["adam", pytest.param("gd", marks=pytest.mark.slow)])
def test_layers_every_job_holds_constant_are_computed_once_with_the_same_numbers_bit_for_bit(optimizer, monkeypatch):
    # frozen prefixes of 1 to 4 conv layers (full[freeze=True]: all four), two seeds each so
    # that each prefix is a program of its own; minibatches (adam) and the whole split (gd)
    the_task = task("digits-split[width=8,source_steps=4,target_steps=12]")
    base = the_task.budget("target")
    budget = budgets(base)["adam"] if optimizer == "adam" else dataclasses.replace(base, optimizer="gd", lr=0.05)
    specs = ["partial-layers[layers=1,freeze=True]", "partial-layers[layers=2,freeze=True]", "partial-layers[layers=3,freeze=True]", "full[freeze=True]", "scratch"]
    jobs, _, _ = planned_jobs(the_task, specs, (0, 1), budget, dtype=torch.float32)
    weights, ahead = [], []
    for cache in (True, False):
        mine = copy.deepcopy(jobs)
        engine = VmapEngine()
        engine.prefix_cache = cache
        features = engine._prefix_features
        monkeypatch.setattr(engine, "_prefix_features", lambda model, P, X, ds, k, *a: (ahead.append((cache, k)), features(model, P, X, ds, k, *a))[1])
        assert all(o.status == "ok" for o in engine.train(mine, budget))
        weights.append([p.detach().clone() for job in mine for p in job.model.parameters()])
    assert sorted(ahead) == [(True, 1), (True, 2), (True, 3), (True, 4)]  # computed once per program, never when off
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_jobs_frozen_throughout_run_as_programs_without_those_gradients(monkeypatch):
    # full[freeze=True] holds every conv constant (the head differs), partial-layers the first
    # conv: two such jobs make a program that computes no gradient for those parameters; a
    # lone one runs with the others, holding constant only what all of them do
    the_task = task("digits-split[width=8,source_steps=4,target_steps=6]")
    budget = the_task.budget("target")
    specs = ["scratch", "full[freeze=True]", "partial-layers[layers=1,freeze=True]"]
    jobs, refs, tests = planned_jobs(the_task, specs, (0, 1), budget)
    jobs, refs, tests = jobs[:5], refs[:5], tests[:5]  # seed 1's partial-layers left out: a lone one
    engine = VmapEngine()
    programs = []
    run = engine._program
    monkeypatch.setattr(engine, "_program", lambda chunk, *a: (programs.append(([p.index for p in chunk], sorted(p.constant for p in chunk[:1])[0])), run(chunk, *a))[1])
    outcomes = engine.train(jobs, budget)
    convs = frozenset(name for name, _ in jobs[0].model.named_parameters() if name.startswith("convs."))
    assert programs == [([0, 2, 3], frozenset()), ([1, 4], convs)]
    assert all(o.status == "ok" for o in outcomes)
    for job, (ref, _), test in zip(jobs, refs, tests):
        for mine, theirs in zip(job.model.parameters(), ref.parameters()):
            assert float((mine - theirs).detach().abs().max()) <= 1e-5
        assert engine.accuracy([job.model], [test], budget.loss) == [accuracy(ref, test, budget.loss)]


def test_a_regulariser_that_reads_the_weights_despite_its_promise_trains_per_run_with_the_right_result():
    """batchable_regularizer promises not to read batch.model's parameters; the engine hands
    the regulariser a model of structure only (`training.structure_only`, parameters on the
    meta device), so one that reads them anyway fails on the program's first step and its
    jobs train on the per-run loop, where batch.model is each run's own: its own weights,
    not the first job's (which the template's copy would have silently given)."""

    class ReadsWeights(Strategy):
        name = "test-reads-weights"
        batchable_regularizer = True

        def plan(self, source, target, rng):
            from ptbench.api import TransferPlan

            return TransferPlan.full(source, target)

        def batch_regularizer(self, batch):
            return 0.1 * sum(p.pow(2).sum() for p in batch.model.parameters())

    the_task = task("digits-split[width=4,source_steps=5,target_steps=4]")
    budget = the_task.budget("target")
    jobs, refs, tests = planned_jobs(the_task, [], (0, 1), budget, dtype=torch.float32)
    for seed in (0, 1):
        streams = RandomStreams(seed)
        donor = the_task.model("source", streams.torch("source-init"))
        train_split = the_task.data("target", streams).train
        model = the_task.model("target", streams.torch("target-init"))
        plan = ReadsWeights().plan(donor, model, None)
        plan.apply(donor, model)
        ref = copy.deepcopy(model)
        train(ref, train_split, budget, streams.torch("target-batches"), plan, ReadsWeights(), donor=donor)
        refs.append(ref)
        jobs.append(BatchJob(model, train_split, plan, batches=streams.torch("target-batches"), strategy=ReadsWeights(), donor=donor))
    engine = VmapEngine()
    assert engine.supports(jobs[0].model, budget, jobs[0].plan, jobs[0].strategy) is None  # the promise is taken at its word
    outcomes = engine.train(jobs, budget)
    assert [o.status for o in outcomes] == ["ok", "ok"] and len(engine.fallbacks) == 1
    assert "batch.model's parameters" in engine.fallbacks[0], engine.fallbacks[0]
    for job, ref in zip(jobs, refs):
        for mine, theirs in zip(job.model.parameters(), ref.parameters()):
            assert torch.equal(mine, theirs)
