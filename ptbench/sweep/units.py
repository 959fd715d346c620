"""Units of work: what one executor call (a thread, a worker process, a dask task) runs.

A unit is either one group (per-run path), or several groups of one task variant that the
task's batched engine trains as one program. Units are independent of each other: each
draws its own data from (seed, role) streams and takes donors from the cache or trains them,
so any executor can run them in any order, anywhere, and the results are the same.

Units travel to workers as pickled bytes (`payload`) and are unpickled there only after the
run's plugin files are loaded, so a task or strategy defined in a `--plugin FILE` works in a
worker process and on a cluster (where the file must be at the same path).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Iterator, Sequence

from ptbench.api import RunResult
from ptbench.run.per_run import Group, RunOptions, run_group


@dataclass
class Unit:
    groups: list[Group]
    batched: bool = False

    @property
    def runs(self) -> int:
        return sum(len(g.specs) for g in self.groups)

    def specs(self):
        return [spec for group in self.groups for spec in group.specs]


def _batchable(group: Group, options: RunOptions) -> bool:
    if not options.batched or group.task.trace_every() > 0:
        return False
    return group.task.batched_engine() is not None


def make_units(groups: Sequence[Group], options: RunOptions, parts: int = 1) -> list[Unit]:
    """Batchable groups of one task variant become units of at most `options.max_batch_runs`
    runs, split further so that there are at least `parts` units when the groups allow
    (parallel workers all get work); every other group is a unit of its own."""
    by_task: dict[str, list[Group]] = {}
    units: list[Unit] = []
    for group in groups:
        if _batchable(group, options):
            by_task.setdefault(group.task.key, []).append(group)
        else:
            units.append(Unit([group]))
    batched_runs = sum(len(g.specs) for gs in by_task.values() for g in gs)
    share = max(1, -(-batched_runs // max(parts - len(units), 1)))  # ceil: runs per unit
    cap = max(1, min(options.max_batch_runs, share))
    batched: list[Unit] = []
    for task_groups in by_task.values():
        current: list[Group] = []
        for group in task_groups:
            if current and sum(len(g.specs) for g in current) + len(group.specs) > cap:
                batched.append(Unit(current, batched=True))
                current = []
            current.append(group)
        if current:
            batched.append(Unit(current, batched=True))
    return batched + units


def run_unit(unit: Unit, options: RunOptions) -> Iterator[RunResult]:
    if unit.batched:
        from ptbench.run.batched import run_batched

        from ptbench.run.engines import torch_threads

        engine = unit.groups[0].task.batched_engine()
        with torch_threads(engine.threads if options.device == "cpu" else None):
            yield from run_batched(unit.groups, engine, options)
    else:
        for group in unit.groups:
            yield from run_group(group, options)


def payload(unit: Unit) -> bytes:
    return pickle.dumps(unit)


def run_payload(data: bytes, options: RunOptions, plugins: Sequence[str] = (), threads: int | None = None) -> list[RunResult]:
    """Run a pickled unit in a worker: load the plugin files first, then unpickle and run."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if plugins:
        import sys

        from ptbench.registry import Registry, plugin_module_name

        registry = Registry()
        for path in plugins:
            if plugin_module_name(path) not in sys.modules:  # once per worker process
                registry.load_plugin(path)
    unit = pickle.loads(data)
    return list(run_unit(unit, options))
