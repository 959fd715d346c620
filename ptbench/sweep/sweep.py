"""Running a list of RunSpecs into a store: what is pending, in which groups, with progress.

Kept apart from `runner` (which knows how one group trains) so that executors, resume and
reporting can change without touching training, and the other way round.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

from tqdm import tqdm

from ptbench.api import RunResult, RunSpec
from ptbench.run import exits
from ptbench.sweep.execute import Executor, LocalExecutor
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.errors import PtbenchError
from ptbench.results.store import LOCK_TIMEOUT_ENV, Store, StoreLocked
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
    """Ctrl-C (SIGINT) or SIGTERM during a sweep, carrying what had finished (and is stored)
    by then, and the signal; `exit_status` is the shell's for it (130, 143)."""

    def __init__(self, summary: SweepSummary, signum: int = signal.SIGINT):
        super().__init__()
        self.summary = summary
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum)


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


@dataclass
class _Unwritten:
    """Finished runs the store could not take yet (another process held it locked past the
    lock timeout): kept in memory and in `store.unwritten_path`, written as soon as the store
    is free again, never dropped. `say` prints a one-line notice (nothing when quiet)."""

    say: Callable[[str], None] = lambda line: None
    rows: list[dict] = field(default_factory=list)
    not_kept: str | None = None  # why the file next to the store could not hold them either

    def keep(self, store: Store, rows: list[dict]) -> None:
        self.rows += rows
        try:
            store.keep_unwritten(rows)
        except OSError as err:
            self.not_kept = err.strerror or str(err)

    def where(self, store: Store) -> str:
        if self.not_kept is None:
            return f"they are kept in {str(store.unwritten_path)!r}, which the next `ptbench run` with this store imports"
        return f"they could not be kept in {str(store.unwritten_path)!r} either ({self.not_kept}), so the next run re-runs them"

    def flush(self, store: Store, wait: float) -> bool:
        """Write the kept runs (and any an earlier sweep left in the file); True when done.
        With `wait=0` a store still locked costs one probe, not a read of the file."""
        if wait == 0 and not store.free_now():
            return False
        try:
            store.import_unwritten(self.rows, wait=wait)
        except StoreLocked:
            return False
        except PtbenchError as err:
            raise type(err)(f"{err}; {len(self.rows)} finished run(s) were not stored: {self.where(store)}") from None
        self.say(f"ptbench: the store {store.where} is free again; the {len(self.rows)} run(s) kept meanwhile are stored")
        self.rows, self.not_kept = [], None
        return True

    def finish(self, store: Store) -> None:
        """At the end of a sweep: store what is kept, waiting up to the lock timeout, or
        say how many finished runs could not be stored and where they are."""
        if self.rows and not _retrying(lambda: self.flush(store, wait=store.lock_timeout), store.lock_timeout):
            raise StoreLocked(
                f"{len(self.rows)} finished run(s) could not be written to the store {store.where}: another process kept it "
                f"locked for more than {store.lock_timeout:g} s; {self.where(store)} (set {LOCK_TIMEOUT_ENV} to wait longer)"
            )


def _retrying(attempt: Callable[[], bool], patience: float) -> bool:
    """Call `attempt` until it returns True or `patience` seconds have passed, backing off
    from 50 ms to 2 s between calls; whether it succeeded."""
    deadline, delay = time.monotonic() + patience, 0.05
    while True:
        if attempt():
            return True
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _write(store: Store, result: RunResult, hashes: dict[str, str], unwritten: _Unwritten | None = None) -> RunResult:
    """Store a result; one the store cannot hold (a plugin's diagnostics that JSON cannot
    encode) is stored as failed with the reason, like any other plugin error, and the sweep
    goes on. A store locked by another process is retried with backoff for its lock timeout;
    past that the run is kept (`_Unwritten`) and the sweep goes on, trying again, without
    waiting, at each later run. A full disk or a store that cannot be written stops the sweep
    with one line (PtbenchError) saying how many finished runs were not stored."""
    unwritten = unwritten if unwritten is not None else _Unwritten()
    result = replace(result, plugin_hash=hashes.get(result.key))
    try:
        row = store.row(result)
    except (TypeError, ValueError) as err:
        result = replace(result, status="failed", error=f"result could not be stored: {err}", diagnostics={})
        row = store.row(result)
    if unwritten.rows:  # already locked out: keep this one too, try them all once
        unwritten.keep(store, [row])
        unwritten.flush(store, wait=0)
        return result

    def attempt() -> bool:
        try:
            store.write_rows([row])
        except StoreLocked:
            return False
        return True

    try:
        if _retrying(attempt, store.lock_timeout):
            return result
    except PtbenchError as err:  # a full disk, a read-only or damaged store: nothing more can be stored
        unwritten.keep(store, [row])
        raise type(err)(f"{err}; {len(unwritten.rows)} finished run(s) were not stored: {unwritten.where(store)}") from None
    unwritten.keep(store, [row])
    unwritten.say(
        f"ptbench: the store {store.where} is locked by another process (waited {store.lock_timeout:g} s); "
        f"finished runs are kept in {str(store.unwritten_path)!r} and stored once it is free"
    )
    return result


def _open_for_sweep(store: Store, say: Callable[[str], None]) -> None:
    """Before a sweep writes anything: refuse a damaged store, and import the runs an earlier
    sweep could not write into it (so they are not run again)."""
    store.check()
    if not store.unwritten_path.exists():
        return
    imported: list[int] = []

    def attempt() -> bool:
        try:
            imported.append(store.import_unwritten())
        except StoreLocked:
            return False
        return True

    if not _retrying(attempt, store.lock_timeout):
        raise StoreLocked(
            f"the store {store.where} is locked by another process (waited {store.lock_timeout:g} s); let that process "
            f"finish and run again, or set {LOCK_TIMEOUT_ENV} to wait longer"
        )
    if imported[0]:
        say(f"ptbench: imported {imported[0]} run(s) an earlier sweep could not store, from {str(store.unwritten_path)!r}")


def run_sweep(
    specs: list[RunSpec],
    store: Store,
    options: RunOptions = RunOptions(),
    force: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> SweepSummary:
    say = (lambda line: tqdm.write(line, file=sys.stderr)) if progress else (lambda line: None)
    _open_for_sweep(store, say)
    unwritten = _Unwritten(say)
    plan = pending(specs, store, force, retry_failed)
    todo = plan.todo
    summary = SweepSummary(skipped=plan.skipped, changed=plan.changed)
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 5.0)

    executor = executor or LocalExecutor()
    seen = exits.Watch()
    try:
        # Ctrl-C and SIGTERM are recorded, not raised, while results are stored and counted (a
        # run is stored and counted, or neither; every result an executor has received is
        # stored); the executor stops at its next safe point, or at once while it trains here.
        with exits.watch() as seen:
            results = executor.run(group_specs(todo), options)
            try:
                for result in results:
                    result = _write(store, result, plan.hashes, unwritten)
                    summary.statuses[result.status] += 1
                    bar.update(1)
                    bar.set_postfix_str(f"{result.task[:40]} seed {result.seed}", refresh=False)
                    if result.status != "ok":
                        bar.write(f"{result.status}: {result.task} / {result.strategy} / seed {result.seed}: {result.error}", file=sys.stderr)
            finally:
                close = getattr(results, "close", None)
                if close is not None:  # stop the executor's workers now, not when collected
                    close()
        if seen.signum is not None:  # it arrived as the last results were stored: still a stop
            raise SweepInterrupted(summary, seen.signum)
        unwritten.finish(store)
    except SweepInterrupted:
        raise
    except KeyboardInterrupt as err:
        raise SweepInterrupted(summary, getattr(err, "signum", None) or seen.signum or signal.SIGINT) from None
    finally:
        bar.close()
    return summary
