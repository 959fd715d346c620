"""Executors: worker processes (--jobs) and a dask cluster give the local executor's results,
plugins defined in a file work in workers, and a worker that dies costs only its own runs."""

from __future__ import annotations

import pytest

from ptbench.api import RunSpec
from ptbench.sweep.execute import DaskExecutor, LocalExecutor, ProcessExecutor, make_executor
from ptbench.errors import PtbenchError
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.results.store import Store
from ptbench.strategies.full import Full
from ptbench.strategies.l2_sp import L2SP
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.scratch import Scratch
from ptbench.sweep import units
from ptbench.sweep.units import make_units

#: Fields that say how long or where a run took, not what it found.
TIMING = {"source_seconds", "target_seconds"}


def sweep_specs(make_task):
    """Two task variants (two batched units) plus a per-run strategy, two seeds."""
    tasks = [make_task(), make_task(shared=0.5)]
    strategies = [Scratch(), Full(), PartialFilters(fraction=0.5, freeze=True), L2SP(alpha=0.01)]
    return [RunSpec(t, s, seed) for t in tasks for s in strategies for seed in (0, 1)]


def results(executor, specs, options=RunOptions()):
    return {r.key: r for r in executor.run(group_specs(specs), options)}


def assert_equal_results(left, right):
    assert left.keys() == right.keys()
    for key in left:
        a, b = vars(left[key]), vars(right[key])
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}, key


def test_worker_processes_give_the_local_results(make_task, tmp_path):
    specs = sweep_specs(make_task)
    options = RunOptions(cache_dir=str(tmp_path / "cache"))
    local = results(LocalExecutor(), specs, RunOptions())
    parallel = results(ProcessExecutor(2), specs, options)
    assert all(r.status == "ok" for r in parallel.values())
    assert_equal_results(parallel, local)


def test_the_cut_follows_the_workers_and_the_numbers_do_not(make_task, monkeypatch):
    """One worker trains a variant's six seeds as one program, two as two, three as three
    (here every unit is worth its own worker); each run comes out the same, bit for bit."""
    monkeypatch.setattr(units, "SPLIT_MIN_SECONDS", 1e-9)
    task = make_task(steps=40)
    specs = [RunSpec(task, s, seed) for seed in range(6) for s in (Scratch(), Full(), PartialFilters(fraction=0.5, freeze=True), L2SP(alpha=0.01))]
    cuts = {w: [len(u.groups) for u in make_units(group_specs(specs), RunOptions(), workers=w)] for w in (1, 2, 3)}
    assert cuts == {1: [6], 2: [3, 3], 3: [2, 2, 2]}
    local = results(LocalExecutor(), specs)
    assert {r.path for r in local.values()} == {"batched"}
    for workers in (2, 3):
        assert_equal_results(results(ProcessExecutor(workers), specs), local)


def test_dask_local_cluster_gives_the_local_results(make_task):
    distributed = pytest.importorskip("distributed", reason="the dask extra (pip install 'ptbench[dist]')")
    specs = sweep_specs(make_task)
    local = results(LocalExecutor(), specs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = results(DaskExecutor(cluster.scheduler_address), specs)
    assert all(r.status == "ok" for r in remote.values())
    assert_equal_results(remote, local)


PLUGIN = '''
import os

from ptbench.api import Strategy, TransferPlan


class HalfFull(Strategy):
    """A plugin strategy: its class must reach worker processes by file, not by import."""

    name = "half-full"

    def plan(self, source, target, rng):
        return TransferPlan.filters(source, target, fraction=0.5, rng=rng)


class KillsItsWorker(Strategy):
    """Kills the worker process on the d=101 task variant: what an out-of-memory kill looks
    like to the pool. Elsewhere it transfers nothing."""

    name = "kills-its-worker"

    def plan(self, source, target, rng):
        if target.d == 101:
            os._exit(3)
        return TransferPlan.nothing()
'''


def test_plugins_run_in_workers_and_a_dying_worker_fails_only_its_runs(tmp_path, cli, task_spec):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    store = tmp_path / "runs.db"
    good, doomed = task_spec(), task_spec(d=101)
    args = ["run", "--plugin", str(plugin), "--jobs", "2", "--seeds", "1", "--store", str(store), "--quiet", "--no-leaderboard",
            "--task", good, "--task", doomed, "--strategy", "scratch", "--strategy", "half-full", "--strategy", "kills-its-worker"]
    result = cli(*args)
    assert result.code == 1 and "Traceback" not in result.err
    with Store(store) as opened:
        runs = opened.frame()
    assert len(runs) == 6
    # the doomed variant's unit kills its worker; each of its runs is then retried alone, so
    # only the run that kills its worker again is stored as failed, saying how the worker
    # ended; the other unit, and the doomed variant's other runs, are fine
    doomed_runs = runs[runs["task"].str.contains("d=101")].set_index("strategy")
    assert doomed_runs.loc["kills-its-worker", "status"] == "failed"
    assert "the worker process exited with status 3 while running this run" in doomed_runs.loc["kills-its-worker", "error"]
    assert (doomed_runs.drop("kills-its-worker")["status"] == "ok").all()
    good_runs = runs[~runs["task"].str.contains("d=101")]
    assert (good_runs["status"] == "ok").all() and "half-full" in set(good_runs["strategy"])


def test_executor_options_are_checked(cli, task_spec, tmp_path):
    with pytest.raises(PtbenchError, match="--scheduler"):
        make_executor("dask")
    with pytest.raises(PtbenchError, match="at least 1"):
        make_executor("local", jobs=0)
    with pytest.raises(PtbenchError, match="--executor dask"):
        make_executor("local", scheduler="tcp://127.0.0.1:1")
    result = cli("run", "--task", task_spec(), "--strategy", "scratch", "--seeds", "1", "--executor", "dask",
                 "--store", str(tmp_path / "runs.db"), "--quiet")
    assert result.code == 2 and "--scheduler" in result.err
