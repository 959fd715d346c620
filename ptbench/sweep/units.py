"""Units of work: what one executor call (this process, a worker process, a dask task) runs.

A unit is some groups of one task variant. Groups of a task that offers a batched engine
are packed together (up to `max_batch_runs` runs), so that the engine can train them as one
program; every other group is a unit of its own. This is scheduling only: which path each
run takes is decided once, per run, by `ptbench.run.protocol.batched_refusal` inside
`ptbench.run.runner.run_groups`.

Units are sized by estimated cost (`ptbench.sweep.cost`: seconds on one core), not by run
count: a run of the per-run loop can cost a hundred batched ones, and a digits run ten
signal-noise ones. A task variant's packable groups are cut into units of about equal cost,
none above UNIT_SECONDS where the groups allow and at least one per worker where each is
still worth a unit (SPLIT_MIN_SECONDS), but none of fewer than UNIT_MIN_GROUPS groups where
the variant has them (a unit trains its groups' donors as one program), and the units come
largest first, so that a pool that hands them out in order (longest processing time first)
has its workers finish together rather than one finishing a big unit alone at the end.

The cut follows the worker count (`workers`), because the numbers do not follow the cut: a
batched engine computes each run of a program as it would compute it in any other program
of two or more groups, bit for bit (tested: tests/plugins/test_engine.py and
test_vmapped_engine.py), so one worker gets one program per variant and many workers get
many, with the same results. (A unit of one group is the exception the minimum avoids: its
donor trains on the per-run loop.)

Units are independent: each draws its data from (seed, role) streams and takes donors from
the cache or trains them, so any executor can run them anywhere, in any order, with the
same results. Every unit runs on UNIT_THREADS torch threads wherever it runs, so that its
numbers do not depend on --jobs or on the machine's core count either. They travel to
workers as pickled bytes (`payload`), unpickled only after the run's plugin files are
loaded, so a `--plugin FILE` task or strategy works in workers too.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from typing import Sequence

from ..api import RunResult, RunSpec
from ..run.engines import torch_threads
from ..run.group import Group
from ..run.options import RunOptions
from ..run.runner import run_groups
from .cost import CostModel

#: torch CPU threads of every unit, in this process, a worker or a dask task. torch's CPU
#: reductions depend on the thread count: measured on the quick suite, 2 threads (--jobs 1
#: on 2 cores, as it was) against 1 (--jobs 2) trained different digits source weights in
#: all 125 digits runs and changed one stored accuracy. One thread is also what the models
#: ptbench trains on a CPU run fastest on when a neighbour is busy (the batched engine uses
#: one already: `tasks/signal_noise/engine.py`); parallelism comes from processes.
UNIT_THREADS = 1
#: Estimated seconds (on one core) a packed unit is kept within, where its groups allow: small
#: enough that the quick suite makes a dozen units for 2 workers and a pool handing out the
#: largest first ends within a small unit of the ideal, with the progress bar moving; large
#: enough for an engine program to share its per-step overhead among a few groups (the
#: signal-noise engine: 5 groups as one program or as 2 + 3, equal time within noise).
UNIT_SECONDS = 10.0
#: ... and into at least one unit per worker where each would still cost this much: a sweep
#: of a few seconds, one variant (a seed sweep), is then still spread over a machine's cores,
#: and no further (every unit's engine programs cost a few tenths of a second of per-step
#: overhead: the 8-seed reference sweep of benchmarks/RESULTS.md took 0.3-0.4 s less on 2
#: workers as 2 units than as 4).
SPLIT_MIN_SECONDS = 1.0
#: ... but never into units of fewer groups (seeds) than this, where the variant has them:
#: a unit of one group trains its donor alone, on the per-run loop (an engine program of one
#: is no faster), and pays its program's per-step overhead alone. Measured on the images
#: suite's digits variant (23 strategies, width 16, the 2-core machine, one thread, CPU time
#: per seed): donors 2.8 s alone, 1.4 s two seeds to a unit, 1.1 s five; the target program
#: 7.1-7.7 s either way. A worker's first per-run donor also builds the first torch
#: optimizer of its process, which imports torch._dynamo (1.0-1.7 s). Only a memory bound
#: (`max_batch_runs`) cuts finer.
UNIT_MIN_GROUPS = 2


@dataclass
class Unit:
    groups: list[Group]
    #: Estimated seconds on one core (`ptbench.sweep.cost`); 0 where nobody estimated it.
    cost: float = 0.0

    def specs(self) -> list[RunSpec]:
        return [spec for group in self.groups for spec in group.specs]


def _packable(group: Group, options: RunOptions) -> bool:
    return options.batched and group.task.batched_engine() is not None


def cost_model(options: RunOptions) -> CostModel:
    """The estimate for these options: no engine under --no-batch; under --timeout, a task's
    model or data draw that hangs while it is measured is stopped after the timeout."""
    return CostModel(batched=options.batched, limit=options.timeout)


def make_units(groups: Sequence[Group], options: RunOptions, costs: CostModel | None = None, workers: int = 1) -> list[Unit]:
    """Packable groups of one task variant become units of at most `options.max_batch_runs`
    runs and, where the groups allow, at most UNIT_SECONDS of estimated cost, of about equal
    cost, and at least `workers` of them where each costs SPLIT_MIN_SECONDS; every other
    group is a unit of its own. Largest first. `costs` is the estimate
    (`ptbench.sweep.cost.CostModel`, or anything with its `groups` method)."""
    groups = list(groups)
    group_costs = (costs or cost_model(options)).groups(groups)
    by_task: dict[str, list[tuple[Group, float]]] = {}
    units: list[Unit] = []
    for group, cost in zip(groups, group_costs):
        if _packable(group, options):
            by_task.setdefault(group.task.key, []).append((group, cost))
        else:
            units.append(Unit([group], cost))
    for task_groups in by_task.values():
        units += _pack(task_groups, UNIT_SECONDS, options.max_batch_runs, max(1, workers))
    units.sort(key=lambda unit: -unit.cost)  # stable: equal costs keep the sweep's order
    return units


def _pack(task_groups: list[tuple[Group, float]], most: float, max_runs: int, workers: int) -> list[Unit]:
    """One variant's groups, in order, as k units of about equal cost: k is the fewest that
    keeps each within `most`, at least `workers` where each would still cost
    SPLIT_MIN_SECONDS, and no more than leaves each UNIT_MIN_GROUPS groups; then more where a
    unit would hold more than `max_runs` runs.

    Only cuts of UNIT_MIN_GROUPS groups a unit or more are made for the workers: a group alone
    in a unit trains its donor on the per-run loop (other floats than in a program), so which
    groups stand alone must never depend on the worker count. Where no such cut keeps every
    unit within `max_runs`, the groups are cut by runs alone (`_cut_by_runs`: a group alone
    only where no cut within the cap pairs it), the same cut for any number of workers."""
    total = sum(cost for _, cost in task_groups)
    runs = sum(len(group.specs) for group, _ in task_groups)
    max_runs = max(max_runs, 1)
    most_units = max(len(task_groups) // UNIT_MIN_GROUPS, 1)  # every unit UNIT_MIN_GROUPS groups or more
    k = max(math.ceil(total / most - 1e-9) if most > 0 else 1, min(workers, math.floor(total / SPLIT_MIN_SECONDS)), 1)
    k = min(max(k, math.ceil(runs / max_runs)), most_units)  # fewer units cannot keep within max_runs
    units = _cut_by_cost(task_groups, k)
    if all(len(unit.specs()) <= max_runs for unit in units):
        return units  # every unit of UNIT_MIN_GROUPS groups or more (k <= most_units)
    # the cap binds: a cut that depends on the groups and the cap alone, never on the workers
    return _cut_by_runs(task_groups, max_runs)


def _cut_by_cost(task_groups: list[tuple[Group, float]], k: int) -> list[Unit]:
    """The groups, in order, as at most k units of about equal cost, none of fewer than
    UNIT_MIN_GROUPS groups where the groups allow."""
    share = sum(cost for _, cost in task_groups) / k
    units: list[Unit] = []
    current: list[Group] = []
    cost = done = 0.0  # the current unit's cost; the cost of the units before it
    for i, (group, group_cost) in enumerate(task_groups):
        # cut where this group's middle would cross the next multiple of the share, unless that
        # would leave a unit (this one, or the rest) of fewer than UNIT_MIN_GROUPS groups
        past_share = done + cost + group_cost / 2 > share * (len(units) + 1) and len(units) < k - 1
        enough = len(current) >= UNIT_MIN_GROUPS and len(task_groups) - i >= UNIT_MIN_GROUPS
        if current and past_share and enough:
            units.append(Unit(current, cost))
            done += cost
            current, cost = [], 0.0
        current.append(group)
        cost += group_cost
    if current:
        units.append(Unit(current, cost))
    return units


def _cut_by_runs(task_groups: list[tuple[Group, float]], max_runs: int) -> list[Unit]:
    """The groups, in order, as units of at most `max_runs` runs (a group above it alone: a
    group is never split), with the fewest units of one group, then the fewest units: a
    group stands alone only where no cut within the cap can pair it (then in every cut).
    Exact (dynamic programming over where the units end), in time linear in the groups
    times the groups a unit can hold."""
    sizes = [len(group.specs) for group, _ in task_groups]
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    n = len(sizes)
    best: list[tuple[int, int]] = [(0, 0)] + [(n + 1, n + 1)] * n  # (lone groups, units) of the first i
    start = [0] * (n + 1)  # where the last unit of the best cut of the first i groups begins
    for i in range(1, n + 1):
        j = i - 1
        while j >= 0 and (j == i - 1 or prefix[i] - prefix[j] <= max_runs):
            lone, count = best[j]
            score = (lone + (j == i - 1), count + 1)
            if score < best[i]:
                best[i], start[i] = score, j
            j -= 1
    bounds, i = [], n
    while i > 0:
        bounds.append((start[i], i))
        i = start[i]
    return [Unit([g for g, _ in task_groups[a:b]], sum(c for _, c in task_groups[a:b])) for a, b in reversed(bounds)]


def run_unit(unit: Unit, options: RunOptions) -> list[RunResult]:
    """Every run of the unit, on UNIT_THREADS torch threads (then torch's setting as it was)."""
    with torch_threads(UNIT_THREADS):
        return run_groups(unit.groups, options)


def payload(unit: Unit) -> bytes:
    return pickle.dumps(unit)


def run_payload(data: bytes, options: RunOptions, plugins: Sequence[str] = (), threads: int | None = None) -> list[RunResult]:
    """Run a pickled unit in a worker: load the plugin files first, then unpickle and run. A
    SystemExit or KeyboardInterrupt that plugin code raises where no run catches it (a plugin
    file's import, say) comes out as a RuntimeError saying so, never as the worker's exit."""
    import torch

    from ..run import exits

    if threads:
        torch.set_num_threads(threads)
    try:
        if plugins:
            import sys

            from ..registry import Registry, plugin_module_name

            registry = Registry()
            for path in plugins:
                if plugin_module_name(path) not in sys.modules:  # once per worker process
                    registry.load_plugin(path)
        unit = pickle.loads(data)
        return run_unit(unit, options)
    except Exception:
        raise
    except BaseException as err:
        exits.reraise_users(err)
        raise RuntimeError(exits.exit_text(err)) from None


def plugin_files(units: Sequence[Unit]) -> list[str]:
    """The plugin files (`--plugin FILE`, `Registry.load_plugin`) that define the units' tasks
    and strategies: what a fresh worker process must load before it can unpickle them."""
    import sys

    from ..registry import plugin_module_name

    found: dict[str, None] = {}
    for unit in units:
        for spec in unit.specs():
            for cls in (type(spec.task), type(spec.strategy)):
                module = sys.modules.get(cls.__module__)
                path = getattr(module, "__file__", None)
                if path and cls.__module__ == plugin_module_name(path):
                    found[os.path.abspath(path)] = None
    return list(found)
