"""Cost estimates, units sized by them, `--jobs` values, and the progress bar's time left.

The estimates are checked for what they must get right (order, ratios that follow from the
formula, never raising on a broken plugin), not for seconds: no test here times anything.
"""

from __future__ import annotations

import math
import signal
import sys
import time

import pytest
import torch
from torch import nn

from ptbench.api import RunResult, RunSpec, TransferPlan
from ptbench.errors import PtbenchError
from ptbench.run.group import Group, group_specs
from ptbench.run.options import RunOptions
from ptbench.strategies.full import Full
from ptbench.strategies.scratch import Scratch
from ptbench.sweep import cost, sweep as sweep_module
from ptbench.sweep.cost import PLANS_WITH_DATA, UNKNOWN_RUN_SECONDS, CostModel, engine_speedup, forward_flops
from ptbench.sweep.execute import AUTO, AutoExecutor, DaskExecutor, LocalExecutor, ProcessExecutor, make_executor, parse_jobs
from ptbench.sweep.units import SPLIT_MIN_SECONDS, UNIT_MIN_GROUPS, UNIT_SECONDS, make_units, run_unit
from ptbench.tasks.signal_noise import SignalNoise

from conftest import small_task


@pytest.fixture(autouse=True)
def fresh_estimates():
    cost.clear()
    yield
    cost.clear()


class PlansWithData(Scratch):
    name = "test-plans-with-data"

    def plan_with_data(self, source, target, rng, context):
        return TransferPlan.nothing()


class BrokenData(SignalNoise):
    name = "test-broken-data"

    def data(self, role, streams):
        raise RuntimeError("no data here")


class ExitsInModel(SignalNoise):
    name = "test-exits-in-model"

    def model(self, role, generator):
        sys.exit(3)


# --------------------------------------------------------------------------- the estimate


def test_a_run_costs_more_with_more_steps_and_more_examples_and_less_on_the_engine():
    per_run = CostModel(batched=False)
    base = per_run.run(RunSpec(small_task(), Scratch(), 0))
    assert per_run.run(RunSpec(small_task(steps=400), Scratch(), 0)) > 2 * base
    assert per_run.run(RunSpec(small_task(n_target=400), Scratch(), 0)) > base
    batched = CostModel(batched=True).run(RunSpec(small_task(), Scratch(), 0))
    assert batched == pytest.approx(base / engine_speedup(small_task().batched_engine())[0])


def test_a_strategy_that_plans_with_data_costs_its_multiple_and_a_group_trains_its_donor_once():
    model = CostModel(batched=False)
    task = small_task()
    plain = model.run(RunSpec(task, Scratch(), 0))
    assert model.run(RunSpec(task, PlansWithData(), 0)) == pytest.approx(PLANS_WITH_DATA * plain)  # per run: no engine
    one, two = Group(task, 0, [RunSpec(task, Full(), 0)]), Group(task, 0, [RunSpec(task, Full(), 0), RunSpec(task, Full(freeze=True), 0)])
    donor = model.donor(task, "source")
    assert donor > 0
    assert model.group(two) - model.group(one) == pytest.approx(model.run(RunSpec(task, Full(freeze=True), 0)))


def test_a_task_that_fails_or_exits_while_measured_gets_the_default_and_the_sweep_is_not_stopped():
    model = CostModel()
    assert model.run(RunSpec(BrokenData(**vars_of(small_task())), Scratch(), 0)) == UNKNOWN_RUN_SECONDS
    assert model.run(RunSpec(ExitsInModel(**vars_of(small_task())), Scratch(), 0)) == UNKNOWN_RUN_SECONDS


def vars_of(task):
    return dict(task.values)


def test_under_a_time_limit_a_model_that_hangs_while_measured_is_stopped():
    class Hangs(SignalNoise):
        name = "test-hangs-in-model"

        def model(self, role, generator):
            time.sleep(10)  # past the limit: stopped; were it not, the estimate would be a real one
            return super().model(role, generator)

    task = Hangs(**vars_of(small_task()))
    assert CostModel(limit=0.2).run(RunSpec(task, Scratch(), 0)) == UNKNOWN_RUN_SECONDS
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None) and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_flops_count_matrix_products_and_convolutions():
    linear = nn.Linear(7, 3)
    assert forward_flops(linear, torch.zeros(5, 7)) == 2 * 5 * 7 * 3
    conv = nn.Conv2d(2, 4, 3, padding=1)
    assert forward_flops(conv, torch.zeros(1, 2, 6, 6)) == 2 * (4 * 6 * 6) * (2 * 3 * 3)
    assert conv.training  # left in training mode, as it was


def test_an_engine_may_declare_its_speedup():
    class Declares:
        speedup = (5.0, 2.0)

    class Number:
        speedup = 3

    assert engine_speedup(Declares()) == (5.0, 2.0)
    assert engine_speedup(Number()) == (3.0, 3.0)
    assert engine_speedup(object()) == cost.ENGINE_SPEEDUP


# --------------------------------------------------------------------------- units


class Fixed:
    """Costs given per (task key, seed), for packing tests that must not depend on measuring."""

    def __init__(self, costs):
        self.costs = costs

    def groups(self, groups):
        return [self.costs[(g.task.key, g.seed)] for g in groups]


def specs_for(task, seeds, strategies=(Scratch(), Full())):
    return [RunSpec(task, s, seed) for seed in seeds for s in strategies]


def test_units_hold_one_variant_come_largest_first_and_cover_every_run_once():
    cheap, dear = small_task(), small_task(steps=400)
    groups = group_specs(specs_for(cheap, range(4)) + specs_for(dear, range(4)))
    units = make_units(groups, RunOptions())
    assert all(len({g.task.key for g in unit.groups}) == 1 for unit in units)
    costs = [unit.cost for unit in units]
    assert costs == sorted(costs, reverse=True) and costs[0] > 0
    assert sorted(spec.key for unit in units for spec in unit.specs()) == sorted(spec.key for g in groups for spec in g.specs)
    assert units[0].groups[0].task.key == dear.key


def test_a_variant_is_cut_into_units_of_about_equal_cost_within_the_cap_and_a_group_never():
    task, other = small_task(), small_task(shared=0.5)
    groups = group_specs(specs_for(task, range(10)) + specs_for(other, range(3)))
    costs = {(task.key, seed): 4.0 for seed in range(10)} | {(other.key, seed): 1.5 * UNIT_SECONDS for seed in range(3)}
    units = make_units(groups, RunOptions(), costs=Fixed(costs))
    mine = [unit for unit in units if unit.groups[0].task.key == task.key]
    assert len(mine) == 4 and all(unit.cost <= UNIT_SECONDS + 2.0 for unit in mine)  # 40 s: 4 units, not 10 and not 3
    assert sum(len(unit.groups) for unit in mine) == 10
    # groups dearer than the cap still share a unit (UNIT_MIN_GROUPS: 3 groups of one variant
    # never make a unit of one group), and a group is never split
    assert sorted(len(unit.groups) for unit in units if unit.groups[0].task.key == other.key) == [3]


def test_a_unit_holds_at_least_two_groups_where_the_variant_has_them():
    """A unit of one group trains its donor alone on the per-run loop: units hold
    UNIT_MIN_GROUPS groups even past the cap (8 groups of 6 s: 4 units of 12 s, not 5)."""
    task = small_task()
    groups = group_specs(specs_for(task, range(8)))
    units = make_units(groups, RunOptions(), costs=Fixed({(task.key, s): 6.0 for s in range(8)}))
    assert [len(unit.groups) for unit in units] == [UNIT_MIN_GROUPS] * 4 == [2] * 4


@pytest.mark.parametrize("costs", [[10.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 10.0], [12.0, 1.0, 12.0, 1.0, 1.0]])
def test_uneven_groups_never_make_a_unit_of_one_group(costs):
    """The cut by cost gives way to UNIT_MIN_GROUPS: a dear group at either end shares its
    unit rather than standing alone (a resumed sweep's seeds can have very uneven costs)."""
    task = small_task()
    groups = group_specs(specs_for(task, range(len(costs))))
    units = make_units(groups, RunOptions(), costs=Fixed({(task.key, s): c for s, c in enumerate(costs)}))
    assert all(len(unit.groups) >= UNIT_MIN_GROUPS for unit in units)
    assert sorted(g.seed for unit in units for g in unit.groups) == list(range(len(costs)))


@pytest.mark.parametrize(("seeds", "each", "workers", "count"),
                         [(64, 0.075, 4, 4), (64, 0.075, 2, 2), (64, 0.075, 1, 1), (8, 0.3, 4, 2), (8, 0.1, 4, 1), (4, 2.0, 4, 2), (3, 2.0, 4, 1)])
def test_a_small_variant_is_cut_for_the_workers_and_never_below_a_second_a_unit(seeds, each, workers, count):
    """A seed sweep of a few seconds is one variant: cut into one unit per worker where each
    costs SPLIT_MIN_SECONDS (64 x 0.075 = 4.8 s: 4 units for 4 workers, 2 for 2, 1 for one),
    fewer where it would not (2.4 s: 2; 0.8 s: 1), never into units of one group (4 groups:
    2 units; 3: 1)."""
    task = small_task()
    groups = group_specs(specs_for(task, range(seeds)))
    units = make_units(groups, RunOptions(), costs=Fixed({(task.key, s): each for s in range(seeds)}), workers=workers)
    assert len(units) == count and all(unit.cost >= min(SPLIT_MIN_SECONDS, seeds * each) - 1e-9 for unit in units)
    assert sorted(g.seed for unit in units for g in unit.groups) == list(range(seeds))


def test_max_batch_runs_still_caps_a_unit():
    task = small_task()
    groups = group_specs(specs_for(task, range(6)))
    units = make_units(groups, RunOptions(max_batch_runs=4), costs=Fixed({(task.key, s): 0.5 for s in range(6)}))
    assert [len(unit.specs()) for unit in units] == [4, 4, 4]


def test_groups_without_an_engine_are_units_of_their_own():
    task = small_task()
    groups = group_specs(specs_for(task, range(3)))
    units = make_units(groups, RunOptions(batched=False), costs=Fixed({(task.key, s): 1.0 for s in range(3)}))
    assert len(units) == 3 and all(len(unit.groups) == 1 for unit in units)


def test_a_unit_runs_on_one_torch_thread_and_leaves_torchs_setting_as_it_was():
    seen = []

    class Records(Scratch):
        name = "test-records-threads"

        def plan(self, source, target, rng):
            seen.append(torch.get_num_threads())
            return TransferPlan.nothing()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        [unit] = make_units(group_specs([RunSpec(small_task(steps=5), Records(), 0)]), RunOptions(batched=False))
        [result] = run_unit(unit, RunOptions(batched=False))
        assert result.status == "ok" and seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- --jobs


@pytest.mark.parametrize("value, expected", [("auto", AUTO), ("AUTO", AUTO), ("1", 1), ("8", 8), (3, 3)])
def test_jobs_values(value, expected):
    assert parse_jobs(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "", "²"])
def test_bad_jobs_values_say_what_is_expected(value):
    with pytest.raises(PtbenchError, match="at least 1 .* or auto"):
        parse_jobs(value)


def test_make_executor_for_each_jobs_value():
    assert isinstance(make_executor("local", "auto"), AutoExecutor)
    assert isinstance(make_executor("local", "1"), LocalExecutor)
    assert isinstance(make_executor("local", "3"), ProcessExecutor)
    assert isinstance(make_executor("dask", "auto", "tcp://127.0.0.1:1"), DaskExecutor)  # the default is no error
    assert isinstance(make_executor("dask", 1, "tcp://127.0.0.1:1"), DaskExecutor)
    with pytest.raises(PtbenchError, match="--jobs is for the local executor"):
        make_executor("dask", "2", "tcp://127.0.0.1:1")


@pytest.mark.parametrize("args", [["--jobs", "0"], ["--jobs", "x"], ["--jobs", "2", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"]])
def test_bad_jobs_on_the_command_line_is_one_line_and_exit_2(cli, task_spec, args):
    result = cli("run", "--task", task_spec(), "--strategy", "scratch", "--seeds", "1", "--no-leaderboard", *args)
    assert result.code == 2 and len(result.err.splitlines()) == 1 and "--jobs" in result.err


def test_jobs_is_explained_in_help(cli):
    text = " ".join(cli("run", "--help").out.split())
    assert "--jobs N|auto" in text and "auto (the default) starts one per usable core" in text


def test_auto_runs_in_this_process_on_one_core_for_one_unit_and_for_a_small_sweep():
    specs = specs_for(small_task(), range(2))
    for executor in (AutoExecutor(cores=1), AutoExecutor(cores=2)):  # one core; a sweep of a second or so
        results = list(executor.run(group_specs(specs), RunOptions()))
        assert executor.chose == "in process" and all(r.status == "ok" for r in results)
    single = AutoExecutor(cores=4)
    list(single.run(group_specs(specs_for(small_task(), [0])), RunOptions()))
    assert single.chose == "in process"


# --------------------------------------------------------------------------- the bar's time left


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def result_for(spec: RunSpec) -> RunResult:
    return RunResult.for_spec(spec)


def test_time_left_follows_what_finished_units_took_and_counts_work_in_flight(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(sweep_module.time, "monotonic", clock)
    task = small_task()
    groups = group_specs(specs_for(task, range(4), strategies=(Scratch(),)))
    progress = sweep_module._Progress(groups, RunOptions(), 4, enabled=True)
    try:
        progress.weights = {g.specs[0].key: 1.0 for g in groups}  # one estimated second per run
        progress.left_by_variant = {task.key: 4.0}
        units = [make_units([g], RunOptions(), costs=Fixed({(task.key, g.seed): 1.0}))[0] for g in groups]
        assert progress.estimate(clock.now)[1] is None  # nothing finished: nothing says how fast
        progress.started(units[0])
        clock.now += 10.0  # the first unit takes ten times its estimate
        progress.advance(result_for(groups[0].specs[0]))
        share, left = progress.estimate(clock.now)
        assert left == pytest.approx(30.0) and share == pytest.approx(0.25)
        progress.started(units[1])
        clock.now += 5.0  # half way through the second unit
        share, left = progress.estimate(clock.now)
        assert left == pytest.approx(25.0) and share == pytest.approx(15.0 / 40.0)
    finally:
        progress.close()


@pytest.mark.parametrize(("seeds", "strategies", "cap", "each"), [
    (4, 3, 7, 2.0), (7, 1, 3, 2.0), (5, 2, 4, 2.0), (9, 2, 5, 2.0), (10, 3, 8, 2.0), (6, 3, 5, 2.0),
    (256, 3, 256, 0.03), (51, 10, 256, 0.1),  # the review's cases: [85, 85, 85, 1] for 1 worker, [64] * 4 for 4
])
def test_which_groups_stand_alone_under_the_run_cap_does_not_depend_on_the_workers(seeds, strategies, cap, each):
    """A group alone in a unit trains its donor on the per-run loop, to other floats: so the
    groups the run cap leaves alone must be the same for any worker count (found by a review:
    the greedy cap cut once left a different seed alone for 1 and for 3 workers)."""
    task = small_task()
    chosen = [Scratch(), Full(), Full(freeze=True)] + [Full(freeze=bool(i % 2)) for i in range(strategies)]
    groups = group_specs(specs_for(task, range(seeds), chosen[:strategies]))
    alone = {}
    for workers in range(1, 9):
        units = make_units(groups, RunOptions(max_batch_runs=cap), costs=Fixed({(task.key, s): each for s in range(seeds)}), workers=workers)
        assert all(len(unit.specs()) <= max(cap, strategies) for unit in units)
        assert sorted(g.seed for unit in units for g in unit.groups) == list(range(seeds))
        alone[workers] = sorted(unit.groups[0].seed for unit in units if len(unit.groups) == 1)
    assert len(set(map(tuple, alone.values()))) == 1, alone
    most = cap // strategies  # groups a unit can hold
    if most >= 2 and math.ceil(seeds / most) <= seeds // 2:  # a cut into units of 2 to `most` groups exists
        assert alone[1] == [], alone


@pytest.mark.parametrize(("sizes", "cap", "costs"), [
    ([3, 3, 3, 3], 9, [0.32, 4.67, 6.53, 6.96]),  # the review's cases: the greedy cut gave 3 + 1 groups
    ([1, 2, 5, 1, 4, 2, 4], 9, None),
])
def test_under_the_run_cap_a_group_stands_alone_only_where_no_cut_pairs_it(sizes, cap, costs):
    task = small_task()
    pool = [Scratch(), Full(), Full(freeze=True)] * 2
    specs = [RunSpec(task, pool[i], seed) for seed, size in enumerate(sizes) for i in range(size)]
    groups = group_specs(specs)
    assert [len(g.specs) for g in groups] == sizes
    costs = costs or [1.0] * len(sizes)
    for workers in (1, 2, 4):
        units = make_units(groups, RunOptions(max_batch_runs=cap), costs=Fixed({(task.key, s): c for s, c in enumerate(costs)}), workers=workers)
        assert all(len(unit.specs()) <= cap and len(unit.groups) >= 2 for unit in units), [len(u.groups) for u in units]
        assert sorted(g.seed for unit in units for g in unit.groups) == list(range(len(sizes)))


def test_the_run_cap_cut_of_thousands_of_groups_pairs_every_group():
    """8000 seeds of 3 runs under a cap of 8: units of two groups each (an earlier cut that
    tried every unit count took 10 s here, quadratic; this one is linear)."""
    task = small_task()
    groups = group_specs(specs_for(task, range(8000), (Scratch(), Full(), Full(freeze=True))))
    units = make_units(groups, RunOptions(max_batch_runs=8), costs=Fixed({(task.key, s): 0.01 for s in range(8000)}), workers=2)
    assert sorted(g.seed for unit in units for g in unit.groups) == list(range(8000))
    assert all(len(unit.specs()) <= 8 and len(unit.groups) == 2 for unit in units)
