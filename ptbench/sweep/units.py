"""Units of work: what one executor call (this process, a worker process, a dask task) runs.

A unit is some groups of one task variant. Groups of a task that offers a batched engine
are packed together (up to `max_batch_runs` runs, and split so that every worker gets
work), so that the engine can train them as one program; every other group is a unit of
its own. This is scheduling only: which path each run takes is decided once, per run, by
`ptbench.run.protocol.batched_refusal` inside `ptbench.run.runner.run_groups`.

Units are independent: each draws its data from (seed, role) streams and takes donors from
the cache or trains them, so any executor can run them anywhere, in any order, with the
same results. They travel to workers as pickled bytes (`payload`), unpickled only after the
run's plugin files are loaded, so a `--plugin FILE` task or strategy works in workers too.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Sequence

from ..api import RunResult, RunSpec
from ..run.group import Group
from ..run.options import RunOptions
from ..run.runner import run_groups


@dataclass
class Unit:
    groups: list[Group]

    def specs(self) -> list[RunSpec]:
        return [spec for group in self.groups for spec in group.specs]


def _packable(group: Group, options: RunOptions) -> bool:
    return options.batched and group.task.batched_engine() is not None


def make_units(groups: Sequence[Group], options: RunOptions, parts: int = 1) -> list[Unit]:
    """Packable groups of one task variant become units of at most `options.max_batch_runs`
    runs, split further so that there are at least `parts` units when the groups allow
    (parallel workers all get work); every other group is a unit of its own."""
    by_task: dict[str, list[Group]] = {}
    single: list[Unit] = []
    for group in groups:
        if _packable(group, options):
            by_task.setdefault(group.task.key, []).append(group)
        else:
            single.append(Unit([group]))
    packed_runs = sum(len(g.specs) for gs in by_task.values() for g in gs)
    share = max(1, -(-packed_runs // max(parts - len(single), 1)))  # ceil: runs per unit
    cap = max(1, min(options.max_batch_runs, share))
    packed: list[Unit] = []
    for task_groups in by_task.values():
        current: list[Group] = []
        for group in task_groups:
            if current and sum(len(g.specs) for g in current) + len(group.specs) > cap:
                packed.append(Unit(current))
                current = []
            current.append(group)
        if current:
            packed.append(Unit(current))
    return packed + single


def run_unit(unit: Unit, options: RunOptions) -> list[RunResult]:
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
