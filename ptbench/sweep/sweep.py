"""Running a list of RunSpecs into a store: what is pending, in which groups, with progress.

Kept apart from `runner` (which knows how one group trains) so that executors, resume and
reporting can change without touching training, and the other way round.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from tqdm import tqdm

from ptbench.api import RunResult, RunSpec
from ptbench.sweep.execute import Executor, LocalExecutor
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.results.store import Store
from ptbench.sources import plugin_hash


@dataclass
class SweepSummary:
    """What a sweep did: how many runs it ran (and why), how many it found stored."""

    skipped: int
    changed: int = 0  # stored runs re-run because their plugin code changed (or was not recorded)
    statuses: Counter = field(default_factory=Counter)

    @property
    def ran(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "ok")

    def summary(self) -> str:
        done = f"{self.ran} run(s) done"
        if self.changed:
            done += f" ({self.changed} re-run because their plugin code changed or was never recorded)"
        parts = [done, f"{self.skipped} already stored"]
        parts += [f"{n} {status}" for status, n in sorted(self.statuses.items()) if status != "ok"]
        return ", ".join(parts)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, carrying what had finished (and is stored) by then."""

    def __init__(self, summary: SweepSummary):
        super().__init__()
        self.summary = summary


@dataclass
class Pending:
    """The runs a sweep must run, and why: `new` were never stored, `changed` were stored by
    other plugin code (or before code was recorded), `retried` failed and --retry-failed."""

    todo: list[RunSpec]
    hashes: dict[str, str]
    changed: int = 0
    skipped: int = 0


def pending(specs: list[RunSpec], store: Store, force: bool = False, retry_failed: bool = False) -> Pending:
    """The specs to run: all with --force; else those not stored, those stored by other
    plugin code, and (with --retry-failed) those stored with a status other than ok."""
    hashes = {spec.key: plugin_hash(type(spec.task), type(spec.strategy)) for spec in specs}
    if force:
        return Pending(list(specs), hashes)
    stored = store.stored()
    todo, changed = [], 0
    for spec in specs:
        if spec.key not in stored:
            todo.append(spec)
            continue
        status, code = stored[spec.key]
        if code != hashes[spec.key]:
            todo.append(spec)
            changed += 1
        elif retry_failed and status != "ok":
            todo.append(spec)
    return Pending(todo, hashes, changed, len(specs) - len(todo))


def _write(store: Store, result: RunResult, hashes: dict[str, str]) -> RunResult:
    """Store a result; one the store cannot hold (a plugin's diagnostics that JSON cannot
    encode) is stored as failed with the reason, like any other plugin error, and the sweep
    goes on."""
    result = replace(result, plugin_hash=hashes.get(result.key))
    try:
        store.write(result)
        return result
    except (TypeError, ValueError) as err:
        failed = replace(result, status="failed", error=f"result could not be stored: {err}", diagnostics={})
        store.write(failed)
        return failed


@contextmanager
def _interrupt_after() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then raise it: a batched program hands over many
    results at once, so an interrupt often lands between storing a run and counting it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def run_sweep(
    specs: list[RunSpec],
    store: Store,
    options: RunOptions = RunOptions(),
    force: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> SweepSummary:
    plan = pending(specs, store, force, retry_failed)
    todo = plan.todo
    summary = SweepSummary(skipped=plan.skipped, changed=plan.changed)
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 5.0)

    executor = executor or LocalExecutor()
    try:
        for result in executor.run(group_specs(todo), options):
            with _interrupt_after():  # a run is stored and counted, or neither
                result = _write(store, result, plan.hashes)
                summary.statuses[result.status] += 1
            bar.update(1)
            bar.set_postfix_str(f"{result.task[:40]} seed {result.seed}", refresh=False)
            if result.status != "ok":
                bar.write(f"{result.status}: {result.task} / {result.strategy} / seed {result.seed}: {result.error}", file=sys.stderr)
    except KeyboardInterrupt:
        raise SweepInterrupted(summary) from None
    finally:
        bar.close()
    return summary
