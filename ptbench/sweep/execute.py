"""Where units of work run: in this process, in worker processes, or on a dask cluster.

An executor takes groups, cuts them into units (`ptbench.sweep.units`: a batched unit per task
variant where the task has an engine, else one unit per group) and yields RunResults as
units finish; the caller (sweep) writes them to the store, so the store has a single writer
per `ptbench run` whatever runs the units. Backends beyond the local one import their
dependencies lazily: dask is the optional extra `dist`.

`--jobs auto` (the default) is `AutoExecutor`: one worker process per usable core, each unit
on one torch thread (`units.UNIT_THREADS`, as everywhere), or this process where workers
cannot pay for themselves: one core, one unit, or a sweep estimated to take less than
AUTO_MIN_SECONDS (a worker is forked from this process, so starting one costs milliseconds,
but a sweep of a few seconds gains less from a second core than its units' imbalance
costs). `--jobs 1` is LocalExecutor, `--jobs N` ProcessExecutor. Each executor cuts the
units for its own worker count (`units.make_units`: one worker gets one engine program per
variant, N workers at least N where each is worth a unit); the engines compute a run alike
in any program, so the numbers are the same whichever runs them.

Worker processes (`--jobs N`, and `--timeout` with one job) are ptbench's own small pool
(`ptbench.sweep.worker`), not a ProcessPoolExecutor, because a pool must know which unit a
dead worker was running, how it died, and what it was doing:

- A worker that dies (a plugin's `os._exit`, a crash, an out-of-memory kill) costs nothing but
  its unit: every run of that unit is retried once, each alone in a worker, so that only the
  run that kills its worker again is stored `failed`, saying how the worker ended ("exited
  with status 0", "was killed by signal 9") and what the run was doing.
- With `--timeout T`, a unit whose worker is still busy T x (its runs + its source models) +
  SLACK seconds after it began is stopped (its worker is killed): the runs it was busy with
  (a hung `plan()`, a source model that trains forever) are stored `timeout`, and its other
  runs are run again, each alone, so they are kept. Without `--timeout` and with one job,
  units run in this process, as they always have.
- Workers die with this process (even by SIGKILL), ignore Ctrl-C, and are killed (with any
  process they started) when the sweep ends or stops; SIGINT or SIGTERM stops the pool at
  its next poll, after every result already received has gone to the sweep.

Executors say when they start a unit (`unit_starts`: in this process, when a worker reports
it began), so that the sweep's progress bar can count the work in flight; dask says nothing.

Executors stop at their safe points when `ptbench.run.exits.received()` says a stop signal
arrived (`exits.check()`), and run compute in this process under `exits.interruptible()`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from ptbench.api import RunResult, RunSpec
from ptbench.errors import PtbenchError
from ptbench.run import exits
from ptbench.run.group import Group
from ptbench.run.options import RunOptions
from ptbench.sweep.units import UNIT_THREADS, Unit, make_units, payload, plugin_files, run_payload, run_unit

#: Seconds a unit gets beyond --timeout x (its runs + its source models) before its worker is
#: stopped: loading plugin files, unpickling, evaluating.
SLACK = 5.0
#: Seconds between two looks at the workers (stop signals, deaths, deadlines, memory).
POLL = 0.25
#: `--jobs auto` runs a sweep estimated below this many seconds (on one core) in this
#: process: a second core cannot save more than half of it, and a unit's own overhead
#: (its engine program's set-up, its results' pickling) is a few tenths of a second.
#: Workers are forked from this process (`_context`), so the pool's start costs
#: milliseconds; with a forkserver it cost 2-3 s and this was 20 s.
AUTO_MIN_SECONDS = 2.0
#: What a worker was busy with, as the messages say it (`exits.now` kinds).
DOING = {
    "data": "drawing its data",
    "source model": "obtaining its source model",
    "planning": "planning it",
    "training": "training it",
    "batched training": "training it in a batched program",
}


class Executor(Protocol):
    def run(self, groups: list[Group], options: RunOptions) -> Iterator[RunResult]: ...


_LISTENERS: list[Callable[[Unit], None]] = []


@contextmanager
def unit_starts(listener: Callable[[Unit], None]) -> Iterator[None]:
    """Call `listener(unit)` in this process whenever an executor starts a unit, for the block
    (the sweep's progress bar: a unit in flight is work partly done)."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


_IDLE: list[Callable[[], None]] = []


@contextmanager
def while_waiting(task: Callable[[], None]) -> Iterator[None]:
    """Run `task` once in this process, in the block, when a worker pool has every worker busy
    and this process has nothing to do but wait for their messages: work the caller needs
    afterwards, done while the workers compute rather than after them (the command line
    imports the leaderboard's libraries, pandas and Jinja2, half a second). Never while a
    unit runs in this process, so it cannot meet a unit's own imports. A task that fails is
    dropped: whoever needs its result does the work again and sees the failure."""
    _IDLE.append(task)
    try:
        yield
    finally:
        if task in _IDLE:
            _IDLE.remove(task)


def _idle() -> None:
    while _IDLE:
        task = _IDLE.pop(0)
        try:
            task()
        except Exception:  # noqa: BLE001 - see while_waiting
            pass


def _started(unit: Unit) -> None:
    for listener in list(_LISTENERS):
        listener(unit)


def _lost(unit: Unit, options: RunOptions, why: str) -> list[RunResult]:
    return [RunResult.for_spec(spec, status="failed", error=why, device=options.device) for spec in unit.specs()]


class LocalExecutor:
    """Units one after another in this process; each result streams out as it finishes. Made
    by `make_executor` (`kill_hung=True`), a sweep with a `--timeout` runs its units in one
    worker process instead, so that a call that hangs can be stopped."""

    def __init__(self, plugins: Sequence[str] = (), kill_hung: bool = False):
        self.plugins = tuple(str(os.path.abspath(p)) for p in plugins)
        self.kill_hung = kill_hung

    def run(self, groups: Iterable[Group], options: RunOptions) -> Iterator[RunResult]:
        if self.kill_hung and options.timeout:
            yield from ProcessExecutor(1, self.plugins).run(groups, options)
            return
        for unit in make_units(list(groups), options, workers=1):
            exits.check()  # a stop signal that arrived while the last results were stored
            _started(unit)
            with exits.interruptible():
                results = run_unit(unit, options)
            yield from results


def single_runs(unit: Unit, specs: Sequence[RunSpec] | None = None) -> list[Unit]:
    """One unit per run of `unit` (or of `specs`, runs of it)."""
    by_key = {spec.key: group for group in unit.groups for spec in group.specs}
    return [Unit([Group(by_key[spec.key].task, by_key[spec.key].seed, [spec])]) for spec in (unit.specs() if specs is None else specs)]


def unit_limit(unit: Unit, timeout: float) -> float:
    """Seconds a unit may take in a worker under `--timeout`: the timeout per run and per
    source model (one per group), plus SLACK."""
    return timeout * (len(unit.specs()) + len(unit.groups)) + SLACK


@dataclass
class _Job:
    unit: Unit
    id: int
    retry: bool = False  # a run retried alone, its first worker having died with it
    first: str = ""  # how that first worker ended


def _rss(pid: int) -> int:
    """Resident memory of a process in bytes (0 where /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _memory_limit() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit if lower."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:")]
    except (OSError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
            if value.isdigit():
                limits.append(int(value))
        except OSError:
            pass
    return min(limits) if limits else 0


_CONTEXT: list = []


def _context():
    """Workers are forked from this process, where fork exists: it has already imported
    torch, the harness, the plugin files and whatever the cost estimate loaded for the tasks
    (scikit-learn and the digits images, say), so a new worker costs a fork, a few
    milliseconds, and inherits all of it. Measured on 2 cores: a forkserver that imports
    torch and the harness itself made every pool wait 2-3 s before its first unit, and each
    worker then imported the tasks' libraries again (1.5 s for scikit-learn). Spawned (a
    fresh interpreter) where there is no fork. Forking is safe here because this process
    runs torch on one thread while a sweep runs (`sweep.run_sweep`), so no OpenMP thread pool
    exists to be lost in the child, and no other thread of this process touches what a
    worker uses."""
    if not _CONTEXT:
        import multiprocessing

        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            context = multiprocessing.get_context("spawn")
        _CONTEXT.append(context)
    return _CONTEXT[0]


class _Worker:
    """One worker process (`ptbench.sweep.worker.serve`), leading its own process group, and
    what it is doing."""

    def __init__(self, threads: int):
        from ptbench.sweep.worker import serve

        context = _context()
        here, there = context.Pipe(duplex=True)
        self.proc = context.Process(target=serve, args=(there, os.getpid()), name="ptbench-worker")
        self.proc.start()
        there.close()
        self.conn = here
        self.job: _Job | None = None
        self.started: float | None = None  # when its unit began (the "start" message)
        self.doing: tuple[str, set[str]] | None = None  # the last "at" message
        self.rss = 0  # the most resident memory seen while busy with this unit
        self.closed = False  # its end of the connection closed
        self.send({"sys_path": list(sys.path), "cwd": os.getcwd(), "environ": dict(os.environ), "threads": threads})

    def exited(self) -> bool:
        return self.proc.exitcode is not None

    def send(self, message) -> None:
        try:
            self.conn.send(message)
        except OSError:  # it died; the pool notices how
            self.closed = True

    def kill(self) -> None:
        """SIGKILL the worker's process group (it and whatever it started), then reap it."""
        self.signal_kill()
        self.reap()

    def signal_kill(self) -> None:
        for kill in (lambda: os.killpg(self.proc.pid, signal.SIGKILL), self.proc.kill):
            try:
                kill()
            except (ProcessLookupError, PermissionError, OSError):
                pass

    def reap(self) -> None:
        self.proc.join(10)
        self.conn.close()

    def how_it_ended(self, memory: bool = True) -> str:
        code = self.proc.exitcode
        if code is None:
            return "closed its connection to ptbench"
        if code >= 0:
            return f"exited with status {code}"
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        how = f"was killed by signal {-code}{name}"
        limit = _memory_limit()
        if memory and -code == signal.SIGKILL and limit and self.rss >= 0.5 * limit:
            how += f" holding {self.rss / 2**30:.1f} GiB of this machine's {limit / 2**30:.1f} GiB: out of memory?"
        return how

    def doing_text(self, key: str) -> str:
        if self.doing is not None and key in self.doing[1]:
            return DOING.get(self.doing[0], self.doing[0])
        return "starting (loading plugin files)" if self.doing is None else "starting"


@dataclass
class _Pool:
    """Up to `size` workers taking jobs from a queue; `step` is one look at them."""

    size: int
    threads: int
    plugins: tuple[str, ...]
    options: RunOptions
    queue: deque = field(default_factory=deque)
    workers: list = field(default_factory=list)
    ids: int = 0

    def add(self, unit: Unit, retry: bool = False, first: str = "") -> None:
        self.ids += 1
        self.queue.append(_Job(unit, self.ids, retry, first))

    def step(self) -> tuple[list[RunResult], bool]:
        """Results that arrived (or were decided) in one poll, and whether work remains."""
        exits.check()
        out = self._assign()
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
            return out, bool(self.queue)
        if len(busy) == self.size or not self.queue:
            _idle()
        from multiprocessing.connection import wait

        ready = wait([w.conn for w in busy if not w.closed] + [w.proc.sentinel for w in busy], timeout=self._wait())
        for worker in busy:
            if worker.conn in ready:
                out += self._receive(worker)
        for worker in busy:
            if worker.job is not None:
                worker.rss = max(worker.rss, _rss(worker.proc.pid))
                if worker.exited() or worker.closed:
                    out += self._died(worker)
        out += self._past_deadline()
        return out, bool(self.queue) or any(w.job is not None for w in self.workers)

    def close(self) -> None:
        """Kill every worker, then reap them: the kernel frees each one's memory as it dies
        (some 25 ms for a worker that held a batched program), all at once instead of in turn."""
        for worker in self.workers:
            worker.signal_kill()
        for worker in self.workers:
            worker.reap()
        self.workers = []

    # -- the steps --------------------------------------------------------------------------

    def _assign(self) -> list[RunResult]:
        """Give queued jobs to idle workers, starting workers up to `size`; the failed runs
        of units that cannot be sent at all."""
        for worker in [w for w in self.workers if w.job is None and w.exited()]:  # died idle
            worker.kill()
            self.workers.remove(worker)
        lost: list[RunResult] = []
        while self.queue:
            worker = next((w for w in self.workers if w.job is None), None)
            if worker is None and len(self.workers) >= self.size:
                break
            job = self.queue.popleft()
            try:
                data = payload(job.unit)
            except Exception as err:  # a plugin object pickle cannot carry
                lost += _lost(job.unit, self.options, f"worker process: the unit cannot be sent: {type(err).__name__}: {err}")
                continue
            if worker is None:
                worker = _Worker(self.threads)
                self.workers.append(worker)
            worker.job, worker.started, worker.doing, worker.rss = job, None, None, 0
            worker.send((job.id, data, self.options, self.plugins))
        return lost

    def _wait(self) -> float:
        if not self.options.timeout:
            return POLL
        now, wait = time.monotonic(), POLL
        for worker in self.workers:
            if worker.job is not None and worker.started is not None:
                wait = min(wait, worker.started + unit_limit(worker.job.unit, self.options.timeout) - now)
        return max(wait, 0.0)

    def _receive(self, worker: _Worker) -> list[RunResult]:
        out: list[RunResult] = []
        while worker.job is not None and not worker.closed:
            try:
                if not worker.conn.poll():
                    break
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.closed = True
                deadline = time.monotonic() + 5.0  # closed as it exits: wait for its status
                while not worker.exited() and time.monotonic() < deadline:
                    time.sleep(0.02)
                break
            kind = message[0]
            if kind == "start":
                worker.started = time.monotonic()
                _started(worker.job.unit)
            elif kind == "at":
                worker.doing = (message[1], set(message[2]))
            elif kind == "done":
                worker.job = None
                out += message[2]
            elif kind == "error":
                job, worker.job = worker.job, None
                if message[2] == "ptbench":  # a user's mistake (data not on disk): stop, as in process
                    raise PtbenchError(message[3])
                out += _lost(job.unit, self.options, f"worker process: {message[3]}")
        return out

    def _died(self, worker: _Worker) -> list[RunResult]:
        job = worker.job
        alive = not worker.exited()  # it closed its connection but runs on
        worker.kill()
        self.workers.remove(worker)
        how = "closed its connection to ptbench" if alive else worker.how_it_ended()
        if not job.retry:  # again, each run alone: a death then is that run's own
            first = "closed its connection to ptbench" if alive else worker.how_it_ended(memory=False)
            suspects = worker.doing[1] if worker.doing is not None else set()
            specs = job.unit.specs()  # the runs it was busy with last, so that the others reuse workers
            for unit in single_runs(job.unit, [s for s in specs if s.key not in suspects] + [s for s in specs if s.key in suspects]):
                self.add(unit, retry=True, first=first)
            return []
        return [
            RunResult.for_spec(
                spec, status="failed", device=self.options.device,
                error=f"the worker process {how} while running this run ({worker.doing_text(spec.key)}); the run was "
                f"alone in a fresh worker process, retried after the worker that first ran it {job.first}",
            )
            for spec in job.unit.specs()
        ]

    def _past_deadline(self) -> list[RunResult]:
        timeout = self.options.timeout
        if not timeout:
            return []
        out: list[RunResult] = []
        now = time.monotonic()
        for worker in [w for w in self.workers if w.job is not None and w.started is not None]:
            limit = unit_limit(worker.job.unit, timeout)
            if now < worker.started + limit:
                continue
            job = worker.job
            worker.kill()
            self.workers.remove(worker)
            specs = job.unit.specs()
            hung = {spec.key for spec in specs} if worker.doing is None else worker.doing[1]
            runs, models = len(specs), len(job.unit.groups)
            for spec in specs:
                if spec.key in hung or len(specs) == 1:
                    out.append(RunResult.for_spec(
                        spec, status="timeout", device=self.options.device,
                        error=f"time limit: still {worker.doing_text(spec.key)} after {limit:g} s, the limit of its unit "
                        f"({timeout:g} s x {runs} run(s) and {models} source model(s), + {SLACK:g} s); its worker "
                        "process was stopped",
                    ))
            for unit in single_runs(job.unit, [spec for spec in specs if spec.key not in hung and len(specs) > 1]):
                self.add(unit, retry=job.retry, first=job.first)
        return out


class ProcessExecutor:
    """`--jobs N`: units in N worker processes (`ptbench.sweep.worker`: fresh interpreters,
    nothing inherited from this one but sys.path, the environment and the plugin files),
    largest units first. torch runs on `threads` threads in a worker outside its units (each
    unit runs on `units.UNIT_THREADS`, wherever it runs). Results arrive per unit. See the
    module's docstring for dying and hung workers."""

    def __init__(self, jobs: int, plugins: Sequence[str] = (), threads: int | None = None):
        if jobs < 1:
            raise PtbenchError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        self.plugins = tuple(str(os.path.abspath(p)) for p in plugins)
        self.threads = threads

    def run(self, groups: Iterable[Group], options: RunOptions, units: list[Unit] | None = None) -> Iterator[RunResult]:
        units = make_units(list(groups), options, workers=self.jobs) if units is None else units
        if not units:
            return
        threads = self.threads or UNIT_THREADS
        plugins = tuple(dict.fromkeys([*self.plugins, *plugin_files(units)]))
        pool = _Pool(self.jobs, threads, plugins, options)
        for unit in units:
            pool.add(unit)
        try:
            more = True
            while more:
                with exits.deferred():  # a stop signal is seen at the next step, after these are out
                    results, more = pool.step()
                yield from results
        finally:
            pool.close()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the platform says (a
    container's or `taskset`'s limit), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class AutoExecutor:
    """`--jobs auto`: one worker process per usable core (`usable_cores`), or, where workers
    cannot pay for themselves, LocalExecutor in this process (as `--jobs 1`): on one core, for
    a sweep of one unit, or for one estimated below AUTO_MIN_SECONDS. The numbers are the
    same either way (every unit runs on `units.UNIT_THREADS` torch threads)."""

    def __init__(self, plugins: Sequence[str] = (), cores: int | None = None):
        self.plugins = tuple(str(os.path.abspath(p)) for p in plugins)
        self.cores = cores or usable_cores()
        #: What the last `run` chose: "in process" or "N workers" (for tests and logs).
        self.chose = ""

    def run(self, groups: Iterable[Group], options: RunOptions) -> Iterator[RunResult]:
        groups = list(groups)
        units = make_units(groups, options, workers=self.cores) if self.cores > 1 else []
        if len(units) <= 1 or sum(unit.cost for unit in units) < AUTO_MIN_SECONDS:
            self.chose = "in process"
            yield from LocalExecutor(self.plugins, kill_hung=True).run(groups, options)
            return
        self.chose = f"{min(self.cores, len(units))} workers"
        yield from ProcessExecutor(self.cores, self.plugins, threads=UNIT_THREADS).run(groups, options, units)


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
            units = make_units(list(groups), options, workers=max(1, len(client.nthreads())))
            futures = {}
            for i, unit in enumerate(units):  # largest first, and dask runs them in that order
                future = client.submit(_run_on_worker, payload(unit), options, self.plugins, pure=False,
                                       key=f"ptbench-unit-{i}-{uuid.uuid4().hex}", priority=len(units) - i)
                futures[future] = unit
            pending = as_completed(list(futures))
            while True:
                exits.check()
                with exits.interruptible():
                    future = next(pending, None)
                if future is None:
                    break
                try:
                    results = future.result()
                except Exception as err:
                    results = _lost(futures[future], options, f"dask worker: {type(err).__name__}: {err}")
                yield from results
        finally:
            client.close()


def _run_on_worker(data: bytes, options: RunOptions, plugins: Sequence[str]) -> list[RunResult]:
    """A dask task: the unit runs on `units.UNIT_THREADS` torch threads, as anywhere (a dask
    worker's threads run several tasks at once; its cores are its task slots)."""
    return run_payload(data, options, plugins, UNIT_THREADS)


#: `--jobs auto`: the value, and what `parse_jobs` returns for it.
AUTO = "auto"


def parse_jobs(value: str | int) -> int | str:
    """`--jobs`: a whole number of worker processes (at least 1) or `auto`; a PtbenchError
    that says so for anything else."""
    text = str(value).strip()
    if text.lower() == AUTO:
        return AUTO
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise PtbenchError(f"--jobs must be at least 1 (a number of worker processes) or auto, got {str(value)!r}")
    return int(text)


def make_executor(kind: str = "local", jobs: int | str = 1, scheduler: str | None = None, plugins: Sequence[str] = ()) -> Executor:
    """The executor the command line asks for: `jobs` is a number of worker processes or
    `auto` (AutoExecutor); with dask, `auto` and 1 mean "the cluster decides"."""
    jobs = parse_jobs(jobs)
    if kind == "dask":
        if jobs not in (AUTO, 1):
            raise PtbenchError("--jobs is for the local executor; with dask, the cluster's workers decide (drop --jobs)")
        return DaskExecutor(scheduler or "", plugins)
    if kind != "local":
        raise PtbenchError(f"unknown executor {kind!r}; valid: local, dask")
    if scheduler:
        raise PtbenchError("--scheduler is for --executor dask")
    if jobs == AUTO:
        return AutoExecutor(plugins)
    return ProcessExecutor(jobs, plugins) if jobs > 1 else LocalExecutor(plugins, kill_hung=True)
