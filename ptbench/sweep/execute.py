"""Where units of work run: in this process, in worker processes, or on a dask cluster.

An executor takes groups, cuts them into units (`ptbench.sweep.units`: a batched unit per task
variant where the task has an engine, else one unit per group) and yields RunResults as
units finish; the caller (sweep) writes them to the store, so the store has a single writer
per `ptbench run` whatever runs the units. A unit that dies with its worker is reported as
failed runs (`--retry-failed` runs them again), never as a lost sweep. Backends beyond the
local one import their dependencies lazily: dask is the optional extra `dist`.
"""

from __future__ import annotations

import os
import uuid
from typing import Iterable, Iterator, Protocol, Sequence

from ptbench.api import RunResult
from ptbench.errors import PtbenchError
from ptbench.run.group import Group
from ptbench.run.options import RunOptions
from ptbench.sweep.units import Unit, make_units, payload, run_payload, run_unit


class Executor(Protocol):
    def run(self, groups: list[Group], options: RunOptions) -> Iterator[RunResult]: ...


def _lost(unit: Unit, options: RunOptions, why: str) -> list[RunResult]:
    return [RunResult.for_spec(spec, status="failed", error=why, device=options.device) for spec in unit.specs()]


class LocalExecutor:
    """Units one after another in this process; each result streams out as it finishes."""

    def run(self, groups: Iterable[Group], options: RunOptions) -> Iterator[RunResult]:
        for unit in make_units(list(groups), options):
            yield from run_unit(unit, options)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class ProcessExecutor:
    """`--jobs N`: units in N worker processes (spawned: no state inherited from the parent,
    safe with torch's threads), each with its share of the CPU cores as torch threads.
    Results arrive per unit. A worker that dies (out of memory, a plugin that exits) takes
    the pool down; the units that were in flight then run again one at a time, each in a
    fresh process, so only the unit that kills its worker is stored as failed."""

    def __init__(self, jobs: int, plugins: Sequence[str] = ()):
        if jobs < 1:
            raise PtbenchError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        self.plugins = tuple(str(os.path.abspath(p)) for p in plugins)

    def run(self, groups: Iterable[Group], options: RunOptions) -> Iterator[RunResult]:
        units = make_units(list(groups), options, parts=self.jobs)
        if not units:
            return
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        crashed: list[Unit] = []
        yield from self._pool(units, options, min(self.jobs, len(units)), threads, crashed)
        for unit in list(crashed):  # again, alone: a crash now is this unit's own
            again: list[Unit] = []
            yield from self._pool([unit], options, 1, threads, again)
            for lost in again:
                yield from _lost(lost, options, "worker process died while running this unit (twice); out of memory?")

    def _pool(self, units: list[Unit], options: RunOptions, workers: int, threads: int, crashed: list[Unit]) -> Iterator[RunResult]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(threads,))
        try:
            futures = {pool.submit(run_payload, payload(unit), options, self.plugins): unit for unit in units}
            for future in as_completed(futures):
                try:
                    results = future.result()
                except BrokenProcessPool:
                    crashed.append(futures[future])
                    continue
                except Exception as err:  # e.g. a unit that cannot be unpickled in the worker
                    results = _lost(futures[future], options, f"worker process: {type(err).__name__}: {err}")
                yield from results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """`--executor dask --scheduler ADDRESS`: units as tasks on a dask.distributed cluster
    (a LocalCluster, or a dask-jobqueue SLURMCluster's `scheduler_address`). Workers need
    ptbench installed and any --plugin file at the same path; results come back to this
    process, which alone writes the store."""

    def __init__(self, scheduler: str, plugins: Sequence[str] = ()):
        if not scheduler:
            raise PtbenchError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
        self.scheduler = scheduler
        self.plugins = tuple(str(os.path.abspath(p)) for p in plugins)

    def run(self, groups: Iterable[Group], options: RunOptions) -> Iterator[RunResult]:
        try:
            from distributed import Client, as_completed
        except ImportError:
            raise PtbenchError("--executor dask needs dask.distributed: pip install 'ptbench[dist]'") from None
        try:
            client = Client(self.scheduler, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise PtbenchError(f"cannot reach the dask scheduler at {self.scheduler!r} ({err}); is the cluster up?") from None
        try:
            workers = client.nthreads()
            parts = max(1, sum(workers.values()))
            units = make_units(list(groups), options, parts=parts)
            futures = {}
            for i, unit in enumerate(units):
                future = client.submit(_run_on_worker, payload(unit), options, self.plugins, pure=False, key=f"ptbench-unit-{i}-{uuid.uuid4().hex}")
                futures[future] = unit
            for future in as_completed(list(futures)):
                try:
                    results = future.result()
                except Exception as err:
                    results = _lost(futures[future], options, f"dask worker: {type(err).__name__}: {err}")
                yield from results
        finally:
            client.close()


def _run_on_worker(data: bytes, options: RunOptions, plugins: Sequence[str]) -> list[RunResult]:
    """A dask task: torch gets the worker's thread count, then the unit runs."""
    threads = None
    try:
        from distributed import get_worker

        worker = get_worker()
        threads = getattr(getattr(worker, "state", worker), "nthreads", None)
    except (ImportError, ValueError):
        pass
    return run_payload(data, options, plugins, threads)


def make_executor(kind: str = "local", jobs: int = 1, scheduler: str | None = None, plugins: Sequence[str] = ()) -> Executor:
    """The executor the command line asks for."""
    if jobs < 1:
        raise PtbenchError(f"--jobs must be at least 1, got {jobs}")
    if kind == "dask":
        if jobs != 1:
            raise PtbenchError("--jobs is for the local executor; with dask, the cluster's workers decide")
        return DaskExecutor(scheduler or "", plugins)
    if kind != "local":
        raise PtbenchError(f"unknown executor {kind!r}; valid: local, dask")
    if scheduler:
        raise PtbenchError("--scheduler is for --executor dask")
    return ProcessExecutor(jobs, plugins) if jobs > 1 else LocalExecutor()
