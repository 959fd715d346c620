"""Running a list of RunSpecs into a store: what is pending, in which groups, with progress.

Kept apart from `runner` (which knows how one group trains) so that executors, resume and
reporting can change without touching training, and the other way round.

The progress bar advances by estimated cost (`ptbench.sweep.cost`, the estimate units are
sized by; a group's donors and data shared among its runs), not by one per run: a sweep's
runs differ a hundredfold in cost (a batched signal-noise run against a per-run digits
run), so a bar of runs says nothing about the time left. Its time left corrects the
estimate by what finished units took and counts the units in flight (`_Progress`); the
description keeps the run count ("runs 120/395"). The sweep runs torch on the units' one
thread (`units.UNIT_THREADS`), so that the store's provenance says what the runs ran on.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

from tqdm import tqdm

from ptbench.api import RunResult, RunSpec
from ptbench.run import exits
from ptbench.run.engines import torch_threads
from ptbench.sweep.execute import Executor, LocalExecutor, unit_starts
from ptbench.sweep.units import UNIT_THREADS, Unit, cost_model
from ptbench.run.group import Group, group_specs
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


def run_weights(groups: list[Group], options: RunOptions) -> dict[str, float]:
    """Each run's share of the sweep's estimated cost: its own, plus an equal part of its
    group's donors and data. Equal weights where nothing could be estimated."""
    model = cost_model(options)
    weights: dict[str, float] = {}
    for group, cost in zip(groups, model.groups(groups)):
        own = {spec.key: model.run(spec) for spec in group.specs}
        shared = max(cost - sum(own.values()), 0.0) / max(len(own), 1)
        weights.update({key: value + shared for key, value in own.items()})
    if not weights or not sum(weights.values()) > 0:
        return dict.fromkeys(weights, 1.0)
    return weights


class _Bar(tqdm):
    """tqdm with the time left as `_Progress` computes it (`{left}`), not as done/elapsed."""

    left: float | None = None

    @property
    def format_dict(self):
        found = super().format_dict
        found["left"] = "?" if self.left is None else self.format_interval(max(self.left, 0.0))
        return found


class _Progress:
    """The bar: the share of the sweep's estimated cost done, "runs done/total", and the time
    left, from `ptbench.sweep.cost`'s estimates corrected by what the finished units took.

    An estimate made before anything runs can be off by a factor for a whole task variant (a
    loaded machine, an engine faster or slower than measured), and tqdm's own time left
    (elapsed x left / done) averages that error over variants that finish at different
    times; it also counts a unit only when its results arrive, all at once, so with N
    workers the work done lags by about N half-done units. So the time left here is

        (estimated cost of the runs not done, x what the finished units of their variant took
         per estimated second, or all finished units where none of theirs has finished)
        - the share of each unit in flight that its time so far covers (at most IN_FLIGHT_CAP)

    spread over the units that run at once (the most seen so far), and at least what the
    longest unit in flight still needs. Executors say when they start a unit
    (`execute.unit_starts`); one that does not (dask) gets done/elapsed extrapolated. Until
    a first unit has finished nothing says how fast units go (on a busy machine the estimate
    can be several times short), so the time left is "?". The bar's share is the same cost,
    corrected, and it never moves back.

    Drawing: a unit's results arrive together, and tqdm draws on the update that first finds
    its interval passed (the first result, the rest not yet counted). So updates only count,
    and a thread draws every `interval` seconds."""

    FORMAT = "{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{left}{postfix}]"
    IN_FLIGHT_CAP = 0.9

    def __init__(self, groups: list[Group], options: RunOptions, runs: int, enabled: bool):
        self.runs, self.done = runs, 0
        enabled = enabled and runs > 0
        self.weights = run_weights(groups, options) if enabled else {}
        self.mean = sum(self.weights.values()) / max(len(self.weights), 1) if self.weights else 1.0
        self.variant = {spec.key: spec.task.key for group in groups for spec in group.specs} if enabled else {}
        self.left_by_variant: dict[str, float] = {}  # estimated cost of the runs not done
        self.done_by_variant: dict[str, float] = {}
        for key, variant in self.variant.items():
            self.left_by_variant[variant] = self.left_by_variant.get(variant, 0.0) + self.weights.get(key, self.mean)
        self.flying: dict[int, tuple[float, float, str]] = {}  # unit -> (when it started, its estimate, variant)
        self.unit_of: dict[str, int] = {}  # run key -> its unit in flight
        self.took: dict[str, list[float]] = {}  # variant -> [seconds, estimate] of its finished units
        self.at_once = 1  # the most units seen in flight together
        self.began = time.monotonic()
        self.interval = 0.2 if sys.stderr.isatty() else 5.0
        self.bar = _Bar(total=1.0, desc=self._desc(), bar_format=self.FORMAT, disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, mininterval=self.interval)
        self._lock = threading.Lock()
        self._changed = False
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            self._thread = threading.Thread(target=self._draw, name="ptbench-progress", daemon=True)
            self._thread.start()

    def _desc(self) -> str:
        return f"runs {self.done}/{self.runs}"

    # -- the estimate ---------------------------------------------------------------------
    def _ratio(self, variant: str) -> float | None:
        """Seconds per estimated second: the variant's finished units, else all, else None."""
        seconds, planned = self.took.get(variant, (0.0, 0.0))
        if planned <= 0:
            seconds = sum(t for t, _ in self.took.values())
            planned = sum(p for _, p in self.took.values())
        return seconds / planned if planned > 0 else None

    def estimate(self, now: float) -> tuple[float, float | None]:
        """(the share done, the seconds left; None before anything can say)."""
        if not self.took:  # no unit known to have finished: nothing says how fast they go
            done = sum(self.done_by_variant.values())
            left = sum(self.left_by_variant.values())
            share = done / (done + left) if done + left > 0 else 0.0
            if done <= 0:
                return share, None
            return share, (now - self.began) * left / done  # an executor that says nothing (dask)
        work = done = 0.0  # in seconds of one unit slot
        for variant, cost in self.left_by_variant.items():
            ratio = self._ratio(variant) or 1.0
            work += cost * ratio
            done += self.done_by_variant.get(variant, 0.0) * ratio
        longest = 0.0
        for began, cost, variant in self.flying.values():
            expected = cost * (self._ratio(variant) or 1.0)
            credit = min(now - began, expected * self.IN_FLIGHT_CAP)
            work -= credit
            done += credit
            longest = max(longest, expected - (now - began))
        work = max(work, 0.0)
        share = done / (done + work) if done + work > 0 else 0.0
        return share, max(work / self.at_once, longest, 0.0)

    def _count(self) -> None:
        share, left = self.estimate(time.monotonic())
        share = min(max(share, self.bar.n), 1.0)
        if share != self.bar.n or left != self.bar.left:
            self.bar.n, self.bar.left = share, left
            self._changed = True

    def _draw(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._count()
                if self._changed:
                    self._changed = False
                    self.bar.refresh()

    # -- events -----------------------------------------------------------------------------
    def started(self, unit: Unit) -> None:
        with self._lock:
            keys = [spec.key for spec in unit.specs()]
            variant = self.variant.get(keys[0], "") if keys else ""
            self.flying[id(unit)] = (time.monotonic(), sum(self.weights.get(key, self.mean) for key in keys), variant)
            self.unit_of.update(dict.fromkeys(keys, id(unit)))
            self.at_once = max(self.at_once, len(self.flying))

    def advance(self, result: RunResult) -> None:
        with self._lock:
            unit = self.unit_of.pop(result.key, None)
            if unit in self.flying:  # its first result: the unit is over (its others come with it)
                began, cost, variant = self.flying.pop(unit)
                took = self.took.setdefault(variant, [0.0, 0.0])
                took[0] += time.monotonic() - began
                took[1] += cost
            weight = self.weights.get(result.key, self.mean)
            variant = self.variant.get(result.key, "")
            self.left_by_variant[variant] = max(self.left_by_variant.get(variant, 0.0) - weight, 0.0)
            self.done_by_variant[variant] = self.done_by_variant.get(variant, 0.0) + weight
            self.done += 1
            self.bar.set_description_str(self._desc(), refresh=False)
            self.bar.set_postfix_str(f"{result.task[:40]} seed {result.seed}", refresh=False)
            self._changed = True
            self._count()

    def write(self, line: str) -> None:
        with self._lock:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.done >= self.runs:
                self.bar.n, self.bar.left = 1.0, 0.0
        self.bar.close()


def check_data(specs: list[RunSpec], limit: float | None = None) -> None:
    """Before anything trains: every task with a run to do finds its data (a task's optional
    `check_data()`, e.g. tasks/images/disk.py); its PtbenchError stops the sweep as one line,
    before any other task of the suite has trained. Anything else it does (a plugin's bug,
    exit or, past `limit` seconds, hang) is not the sweep's end: that task's runs will meet
    the same problem and each say so as its failure."""
    from ptbench.sweep.cost import guarded

    for task in {id(spec.task): spec.task for spec in specs}.values():
        if callable(getattr(task, "check_data", None)):
            def ask(task=task) -> PtbenchError | None:
                try:
                    task.check_data()
                except PtbenchError as err:  # the user's data is not there: say so, below
                    return err
                return None

            missing = guarded(ask, None, limit)
            if missing is not None:
                raise missing


def run_sweep(
    specs: list[RunSpec],
    store: Store,
    options: RunOptions = RunOptions(),
    force: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    preflight: bool = True,
) -> SweepSummary:
    """Run what `specs` lack in `store`. `preflight`: ask every task whether its data is
    there first (off for a dask cluster, whose workers read their own PTBENCH_DATA).

    torch runs on UNIT_THREADS threads in this process for the whole sweep, the estimate
    and the pre-flight included: units run on that many wherever they run, and worker
    processes are forked from this one (`execute._context`), which must therefore never have
    started an OpenMP thread pool (a forked child cannot use its parent's)."""
    with torch_threads(UNIT_THREADS):
        return _run_sweep(specs, store, options, force, retry_failed, progress, executor, preflight)


def _run_sweep(specs: list[RunSpec], store: Store, options: RunOptions, force: bool, retry_failed: bool, progress: bool,
               executor: Executor | None, preflight: bool) -> SweepSummary:
    say = (lambda line: tqdm.write(line, file=sys.stderr)) if progress else (lambda line: None)
    _open_for_sweep(store, say)
    unwritten = _Unwritten(say)
    plan = pending(specs, store, force, retry_failed)
    todo = plan.todo
    if preflight:
        check_data(todo, options.timeout)
    summary = SweepSummary(skipped=plan.skipped, changed=plan.changed)
    groups = group_specs(todo)
    executor = executor or LocalExecutor()
    seen = exits.Watch()
    bar = None
    try:
        bar = _Progress(groups, options, len(todo), progress)
        # Ctrl-C and SIGTERM are recorded, not raised, while results are stored and counted (a
        # run is stored and counted, or neither; every result an executor has received is
        # stored); the executor stops at its next safe point, or at once while it trains here.
        with exits.watch() as seen, unit_starts(bar.started):
            results = executor.run(groups, options)
            try:
                for result in results:
                    result = _write(store, result, plan.hashes, unwritten)
                    summary.statuses[result.status] += 1
                    bar.advance(result)
                    if result.status != "ok":
                        bar.write(f"{result.status}: {result.task} / {result.strategy} / seed {result.seed}: {result.error}")
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
        if bar is not None:
            bar.close()
    return summary
