"""The strategies built on value rules, learning-rate scales and batch regularisers: each one's
defining property, its identity with a reference strategy on the per-run path and, where it
runs batched (signal-noise), on the batched path too; the contract checks that catch plans
and hooks that break those surfaces; and the guide's second and third examples."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

from ptbench.api import RunSpec, Split, Strategy, TrainBudget, TransferPlan, ValueRule
from ptbench.contract import (
    CheckEnv,
    check_lr_scale,
    check_name_of,
    check_plan_shapes,
    check_regularizer,
    check_value_rule,
    checks_for,
    run_check,
)
from ptbench.registry import Registry, default_registry
from ptbench.rng import RandomStreams
from ptbench.run.engines import BatchJob
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.run.protocol import plan_context, plan_target, snapshot
from ptbench.run.runner import run_groups
from ptbench.run.training import train
from ptbench.strategies.bss import BSS
from ptbench.strategies.delta import Delta
from ptbench.strategies.discriminative_lr import DiscriminativeLR
from ptbench.strategies.full import Full
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.partial_layers import PartialLayers
from ptbench.strategies.project_out import ProjectOut
from ptbench.strategies.random_filters import RandomFilters
from ptbench.strategies.scratch import Scratch
from ptbench.strategies.selffer import Selffer
from ptbench.strategies.shrink_perturb import ShrinkPerturb
from ptbench.strategies.surgical import Surgical
from ptbench.sweep.execute import LocalExecutor
from ptbench.tasks.images.models import SmallCNN
from ptbench.tasks.signal_noise.engine import TwoLayerCNNEngine

ROOT = Path(__file__).resolve().parents[2]
COMPARED = ("status", "error", "source_acc", "target_acc", "target_train_acc")
REGISTRY = default_registry()


@pytest.fixture(scope="module")
def task(make_task):
    return make_task(steps=60, n_test=200)


@pytest.fixture(scope="module")
def source(task):
    """Seed 0's trained source model and target data."""
    streams = RandomStreams(0)
    model = task.model("source", streams.torch("source-init"))
    train(model, task.data("source", streams).train, task.budget("source"), streams.torch("source-batches"))
    return model, task.data("target", streams)


def run_both_paths(task, strategies, seeds=(0,)):
    """{strategy instance name: [results per seed]} per path: per-run only, and batched."""
    specs = [RunSpec(task, s, seed) for seed in seeds for s in strategies]
    out = {}
    for path, results in (
        ("per-run", [r for g in group_specs(specs) for r in run_groups([g], RunOptions(batched=False))]),
        ("batched", LocalExecutor().run(group_specs(specs), RunOptions())),
    ):
        by_name: dict[str, list] = {}
        for r in sorted(results, key=lambda r: r.seed):
            by_name.setdefault(r.strategy, []).append(r)
        out[path] = by_name
    return out


def assert_same(a_runs, b_runs):
    for a, b in zip(a_runs, b_runs, strict=True):
        for name in COMPARED:
            assert getattr(a, name) == getattr(b, name), (a.strategy, b.strategy, name)


def start_and_end(task, source, strategy, batched=False):
    """(plan, initial W, trained W) for seed 0, planned by the harness's protocol and trained
    on the per-run loop or by the engine."""
    donor, data = source
    streams = RandomStreams(0)
    target = task.model("target", streams.torch("target-init"))
    budget = task.budget("target")
    context = plan_context(task, data.train, budget, streams, "cpu", extras=data.extras)
    plan = plan_target(strategy, donor, target, streams, context)
    start = target.W.detach().clone()
    if batched:
        assert TwoLayerCNNEngine().train([BatchJob(target, data.train, plan)], budget)[0].status == "ok"
    else:
        train(target, data.train, budget, streams.torch("target-batches"), plan, strategy, snapshot(donor), donor=donor)
    return plan, start, target.W.detach().clone()


def fresh_W(task):
    return task.model("target", RandomStreams(0).torch("target-init")).W.detach()


# --------------------------------------------------------------------------- shrink-perturb


def test_shrink_perturb_at_shrink_1_perturb_0_is_partial_filters_on_both_paths(task, source):
    reference, same = PartialFilters(fraction=0.5), ShrinkPerturb(fraction=0.5, shrink=1.0, perturb=0.0)
    for batched in (False, True):
        plan_a, start_a, end_a = start_and_end(task, source, reference, batched)
        plan_b, start_b, end_b = start_and_end(task, source, same, batched)
        assert torch.equal(plan_a.copy["W"], plan_b.copy["W"])  # the same draws chose the filters
        assert torch.equal(start_a, start_b) and torch.equal(end_a, end_b)
    runs = run_both_paths(task, [reference, same])
    for path in ("per-run", "batched"):
        a, b = runs[path][reference.instance_name], runs[path][same.instance_name]
        assert_same(a, b)
        assert [r.diagnostics for r in a] == [r.diagnostics for r in b]
    assert {r.path for r in runs["batched"][same.instance_name]} == {"batched"}


def test_shrink_perturb_starts_inherited_filters_at_shrink_source_plus_perturb_fresh(task, source):
    donor = source[0].W.detach()
    fresh = fresh_W(task)
    plan, start, _ = start_and_end(task, source, ShrinkPerturb())  # the default: every filter, 0.4 and 0.1
    assert bool(plan.copy["W"].all())
    assert torch.allclose(start, 0.4 * donor + 0.1 * fresh, atol=1e-7)
    plan, start, _ = start_and_end(task, source, ShrinkPerturb(fraction=0.5))
    inherited = plan.copy["W"]
    assert torch.equal(inherited, start_and_end(task, source, PartialFilters(fraction=0.5))[0].copy["W"])
    assert torch.allclose(start[inherited], 0.4 * donor[inherited] + 0.1 * fresh[inherited], atol=1e-7)
    assert torch.equal(start[~inherited], fresh[~inherited])


# --------------------------------------------------------------------------- random-filters, project-out


def test_random_filters_keep_the_source_norms_and_nothing_of_their_directions(task, source):
    donor = source[0].W.detach()
    plan, start, _ = start_and_end(task, source, RandomFilters(fraction=0.5))
    inherited = plan.copy["W"][..., 0]
    assert torch.equal(plan.copy["W"], start_and_end(task, source, PartialFilters(fraction=0.5))[0].copy["W"])
    assert torch.allclose(start[inherited].norm(dim=-1), donor[inherited].norm(dim=-1), rtol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(start[inherited], donor[inherited], dim=-1)
    assert float(cosine.abs().max()) < 0.6
    assert torch.equal(start[~inherited], fresh_W(task)[~inherited])


def test_project_out_removes_the_direction_from_the_inherited_filters(task, source):
    donor = source[0].W.detach()
    v1 = source[1].extras["directions"][1]
    plan, start, _ = start_and_end(task, source, ProjectOut())  # every filter, v_1
    assert float((donor @ v1).abs().max()) > 0.1, "the source filters have a v_1 component to remove"
    assert float((start @ v1).abs().max()) < 1e-5
    assert torch.allclose(start, donor - (donor @ v1)[..., None] * v1, atol=1e-6)
    plan, start, _ = start_and_end(task, source, ProjectOut(fraction=0.5, direction="u"))
    inherited = plan.copy["W"][..., 0]
    assert torch.equal(plan.copy["W"], start_and_end(task, source, PartialFilters(fraction=0.5))[0].copy["W"])
    assert float((start[inherited] @ source[1].extras["directions"][0]).abs().max()) < 1e-5
    assert torch.equal(start[~inherited], fresh_W(task)[~inherited])


def test_value_rule_strategies_run_batched_and_their_identities_hold_on_both_paths(task):
    strategies = [
        Scratch(), Full(),
        RandomFilters(fraction=0.0), ProjectOut(fraction=0.0),  # inherit nothing: scratch
        DiscriminativeLR(decay=1.0), DiscriminativeLR(), Surgical(),  # one layer: full
        RandomFilters(), ProjectOut(), ShrinkPerturb(),
    ]
    runs = run_both_paths(task, strategies)
    batched, per_run = runs["batched"], runs["per-run"]
    for s in strategies:
        assert {r.path for r in batched[s.instance_name]} == {"batched"}, s
        assert {r.path for r in per_run[s.instance_name]} == {"per-run"}, s
        # the engine trains what the per-run loop trains (accuracies equal at this size)
        assert_same(batched[s.instance_name], per_run[s.instance_name])
    for path in (batched, per_run):
        for s in strategies[2:4]:
            assert_same(path[s.instance_name], path["scratch"])
        for s in strategies[4:7]:
            assert_same(path[s.instance_name], path["full"])


def test_the_identities_hold_weight_for_weight_on_both_paths(task, source):
    pairs = [
        (Full(), DiscriminativeLR(decay=1.0)), (Full(), DiscriminativeLR()), (Full(), Surgical()),
        (Scratch(), RandomFilters(fraction=0.0)), (Scratch(), ProjectOut(fraction=0.0)),
    ]
    for batched in (False, True):
        for reference, same in pairs:
            _, start_a, end_a = start_and_end(task, source, reference, batched)
            _, start_b, end_b = start_and_end(task, source, same, batched)
            assert torch.equal(start_a, start_b) and torch.equal(end_a, end_b), (same, batched)


def test_project_out_on_a_task_without_directions_fails_saying_so(task):
    class Undirected(type(task)):
        name = "undirected"

        def data(self, role, streams):
            out = super().data(role, streams)
            del out.extras["directions"]
            return out

        def diagnostics(self, model, data, plan):
            return {}

    (result,) = run_groups(group_specs([RunSpec(Undirected(**task.values), ProjectOut(), 0)]), RunOptions())
    assert result.status == "failed"
    assert "needs the task's 'directions' (needs_extras)" in result.error


# --------------------------------------------------------------------------- learning-rate scales and freezing by layer


@pytest.fixture(scope="module")
def images():
    """Source and target small CNNs (different classes: the head is fresh) and a batch."""
    streams = RandomStreams(0)
    source = SmallCNN(1, 8, 3, streams.torch("source-init"), width=4, depth=3)
    target = SmallCNN(1, 8, 3, streams.torch("target-init"), width=4, depth=3)
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(24, 1, 8, 8, generator=g), torch.randint(3, (24,), generator=g))
    return source, target, data


def image_step(images, strategy, steps=1):
    source, target, data = images
    model = type(target)(1, 8, 3, RandomStreams(0).torch("target-init"), width=4, depth=3)
    plan = strategy.plan(source, model, torch.Generator())
    plan.apply(source, model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, data, TrainBudget(steps=steps, lr=0.1, optimizer="sgd", loss="cross_entropy"), torch.Generator(), plan, strategy, snapshot(source), donor=source)
    return plan, {n: p.detach() - start[n] for n, p in model.named_parameters()}


def test_discriminative_lr_scales_each_layers_step_by_decay_per_layer_from_the_top(images):
    _, full = image_step(images, Full())
    plan, ours = image_step(images, DiscriminativeLR(decay=0.5))
    layers = images[1].transfer_layers()  # conv1, conv2, conv3, head
    for depth, layer in enumerate(reversed(layers)):
        for name in layer.params:
            assert float(plan.lr_scale[name]) == 0.5**depth
            assert torch.allclose(ours[name], 0.5**depth * full[name], rtol=1e-4, atol=1e-6), name
    _, same = image_step(images, DiscriminativeLR(decay=1.0))
    assert all(torch.equal(same[n], full[n]) for n in full)


def test_surgical_fine_tunes_only_the_named_layers_and_the_fresh_head(images):
    plan, moved = image_step(images, Surgical(layers="conv2"), steps=2)
    changed = {n for n, d in moved.items() if bool(d.abs().max() > 0)}
    assert changed == {"convs.1.weight", "convs.1.bias", "head.weight", "head.bias"}
    assert Surgical(layers="first+3").chosen(images[1]) == {"conv1", "conv3"}
    assert Surgical(layers="last").chosen(images[1]) == {"head"}
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        Surgical(layers="conv9").plan(images[0], images[1], torch.Generator())


# --------------------------------------------------------------------------- batch regularisers


def test_delta_and_bss_at_zero_strength_are_full_and_batch_on_the_vmapped_engine(task):
    for strategy in (Delta(), BSS()):
        assert strategy.customises_training()
    strategies = [Full(), Delta(alpha=0.0), BSS(eta=0.0), Delta()]
    runs = run_both_paths(task, strategies)
    full, delta0, bss0, delta = (s.instance_name for s in strategies)
    for path in ("per-run", "batched"):
        assert {r.path for r in runs[path][delta0] + runs[path][bss0] + runs[path][delta]} == {path}
    per_run = runs["per-run"]
    assert_same(per_run[delta0], per_run[full])
    assert_same(per_run[bss0], per_run[full])
    assert all(r.status == "ok" for r in per_run[delta])


def penalty(strategy, model, donor, x):
    from ptbench.api import RegularizerBatch

    output, features = model.forward_features(x)
    return strategy.batch_regularizer(RegularizerBatch(x, None, 0, model, output, features, donor.features(x), TransferPlan()))


def test_delta_is_alpha_times_the_mean_squared_feature_distance_and_zero_at_the_start(task, source):
    donor, data = source
    x = data.train.x
    target = task.model("target", torch.Generator().manual_seed(0))
    TransferPlan.full(donor, target).apply(donor, target)
    assert float(penalty(Delta(alpha=0.3), target, donor, x).detach()) == 0.0
    with torch.no_grad():
        target.W.mul_(1.1)
    with torch.no_grad():
        expected = 0.3 * float(((target.features(x)["conv"] - donor.features(x)["conv"]) ** 2).mean())
    assert float(penalty(Delta(alpha=0.3), target, donor, x).detach()) == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def test_bss_is_eta_times_the_k_smallest_squared_singular_values_of_the_batch_features(task, source):
    donor, data = source
    x = data.train.x
    with torch.no_grad():
        features = donor.features(x)["conv"].reshape(len(x), -1)
    singular = torch.linalg.svd(features).S  # descending
    for k in (1, 2):
        got = float(penalty(BSS(eta=0.01, k=k), donor, donor, x).detach())
        assert got == pytest.approx(0.01 * float((singular[-k:] ** 2).sum()), rel=1e-4)


# --------------------------------------------------------------------------- one helper, one control


def test_selffer_is_partial_layers_with_the_target_as_donor():
    assert issubclass(Selffer, PartialLayers) and Selffer.donor == "target" and PartialLayers.donor == "source"
    assert Selffer.params == PartialLayers.params and Selffer.name == "selffer"
    assert [s.instance_name for s in Selffer.grid()] == ["selffer[freeze=False]", "selffer[freeze=True]"]
    import ptbench.strategies.lp_ft as lp_ft
    import ptbench.strategies.reinit_head as reinit_head

    assert not hasattr(lp_ft, "head_params") and not hasattr(reinit_head, "head_params")  # one helper: TransferModel.head_params


# --------------------------------------------------------------------------- the checks catch what they claim to


class ReadsOutside(Strategy):
    """Half the filters declared, the donor read everywhere."""

    name = "reads-outside"

    def plan(self, source, target, rng):
        plan = TransferPlan.filters(source, target, 0.5, rng=rng)
        for name in plan.copy:
            plan.init[name] = ValueRule.mix(0.5, 0.5)
        return plan


class ProjectsPartly(Strategy):
    """Declares half of every filter's entries, then projects whole filters."""

    name = "projects-partly"

    def plan(self, source, target, rng):
        plan, donor = TransferPlan(), dict(source.named_parameters())
        for layer in target.transfer_layers():
            for name in layer.params:
                param = target.get_parameter(name)
                if param.dim() < 2 or donor[name].shape != param.shape:
                    continue
                length = param[0].numel() if len(layer.filter_shape) == 1 else param.shape[-1]
                mask = torch.zeros(param.shape, dtype=torch.bool)
                mask.view(-1, length)[:, : length // 2] = True  # half of every filter's entries
                plan.copy[name] = mask
                direction = torch.ones(1, length) / length**0.5  # mixes every entry of a filter
                plan.init[name] = ValueRule.project_out(direction, donor=mask.float(), fresh=(~mask).float())
        return plan


class Smuggler(Strategy):
    """Declares nothing and puts the donor's weights into a rule's offset."""

    name = "smuggler"

    def plan(self, source, target, rng):
        donor = dict(source.named_parameters())
        return TransferPlan(init={
            n: ValueRule(donor=0.0, fresh=0.0, offset=donor[n].detach().clone())
            for n, p in target.named_parameters() if donor[n].shape == p.shape
        })


class NegativeRate(Strategy):
    name = "negative-rate"

    def plan(self, source, target, rng):
        return TransferPlan(lr_scale={n: torch.tensor(-1.0) for n, _ in target.named_parameters()})


class NanRate(Strategy):
    name = "nan-rate"

    def plan(self, source, target, rng):
        return TransferPlan(lr_scale={n: torch.tensor(float("nan")) for n, _ in target.named_parameters()})


class DonorScribbler(Strategy):
    """Keeps the source it planned from and scales it in its batch regulariser."""

    name = "donor-scribbler"

    def plan(self, source, target, rng):
        self._source = source
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch):
        with torch.no_grad():
            for p in self._source.parameters():
                p.mul_(1.01)
        return None


class ReferenceScribbler(Strategy):
    name = "reference-scribbler"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def regularizer(self, model, reference, plan):
        for value in reference.values():
            value.zero_()
        return None


class VectorPenalty(Strategy):
    name = "vector-penalty"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch):
        return (batch.output**2).reshape(len(batch.x), -1).mean(dim=1)


@pytest.fixture(scope="module")
def env() -> CheckEnv:
    """The checks against the signal-noise task alone (tests/plugins/test_contract.py runs
    them on every registered task): the models here are built in microseconds."""
    registry = Registry()
    registry.add_class(REGISTRY.tasks["signal-noise"], "built-in")
    return CheckEnv(registry)


@pytest.mark.parametrize(
    "check, cls, words",
    [
        (check_value_rule, ReadsOutside, "reads the donor outside its declared entries"),
        (check_value_rule, ProjectsPartly, "reads the donor outside its declared entries"),
        (check_value_rule, Smuggler, "reproduces the donor's values outside its donor coefficient"),
        (check_lr_scale, NegativeRate, "is negative"),
        (check_lr_scale, NanRate, "is not finite"),
        (check_regularizer, DonorScribbler, "modified the donor model's"),
        (check_regularizer, ReferenceScribbler, "modified the donor's reference parameter"),
        (check_regularizer, VectorPenalty, "not a scalar tensor"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if not isinstance(v, str) else None,
)
def test_a_new_check_fails_a_strategy_that_breaks_it_and_says_why(check, cls, words, env):
    assert check in checks_for(cls), "the check is chosen for this strategy's capabilities"
    result = run_check(check, cls, env)
    assert result.passed is False, result.detail
    assert words in result.detail
    # the structural check is not the one that fails: each failure has its own name
    assert run_check(check_plan_shapes, cls, env).passed is True


def test_capability_checks_run_only_where_the_surface_is_used():
    names = lambda cls: [check_name_of(c) for c in checks_for(cls)]  # noqa: E731
    base = ["name", "param_grid", "plan_shapes", "source_unmodified", "plan_deterministic", "finished_run"]
    assert names(PartialFilters) == base
    assert names(ShrinkPerturb) == base[:3] + ["value_rule"] + base[3:]
    assert names(DiscriminativeLR) == base[:3] + ["lr_scale"] + base[3:]
    assert names(Delta) == base[:5] + ["regularizer", "finished_run"]


# --------------------------------------------------------------------------- the guide's examples


def guide_class(name: str) -> type:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    source = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if f"class {name}" in b)
    assert "import ptbench." not in source and all(
        line.startswith("from ptbench.api import") for line in source.splitlines() if "ptbench" in line and "import" in line
    ), "a guide example imports only ptbench.api"
    module = types.ModuleType(f"guide_{name}")
    exec(compile(source, f"CONTRIBUTING.md:{name}", "exec"), module.__dict__)
    return getattr(module, name)


@pytest.mark.parametrize("name, capability", [("ShrunkFilters", "value_rule"), ("FeatureDistance", "regularizer")])
def test_the_guide_examples_pass_every_check(name, capability, env):
    cls = guide_class(name)
    checks = checks_for(cls)
    assert capability in [check_name_of(c) for c in checks]
    for check in checks:
        result = run_check(check, cls, env)
        assert result.passed is True, f"{result.check}: {result.detail}"


def test_the_guide_examples_keep_their_identities(task, source):
    shrunk, distance = guide_class("ShrunkFilters"), guide_class("FeatureDistance")
    for batched in (False, True):
        a = start_and_end(task, source, PartialFilters(fraction=0.5), batched)
        b = start_and_end(task, source, shrunk(fraction=0.5, shrink=1.0), batched)
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert torch.equal(start_and_end(task, source, distance(alpha=0.0))[2], start_and_end(task, source, Full())[2])
    plan, start, _ = start_and_end(task, source, shrunk())
    inherited = plan.copy["W"]
    assert torch.allclose(start[inherited], 0.5 * source[0].W.detach()[inherited] + 0.5 * fresh_W(task)[inherited], atol=1e-7)
