"""A plugin's exit versus the user's stop, and what a worker process is doing right now.

Plugin code can end a call with SystemExit (`sys.exit`), KeyboardInterrupt or another
BaseException. That is the run's failure, stored `failed`, never the end of the sweep. The
user's Ctrl-C (SIGINT) or SIGTERM *is* the end of the sweep. The two are told apart by
whether this process actually received the signal: `watch()` (used by the sweep and by the
contract checks) installs handlers that record it. Every catch site around plugin code calls
`is_users(err)` and re-raises when it says so:

- a signal was received while watching: the user's (whatever plugin code made of it);
- a KeyboardInterrupt when nobody watches, in the main thread: perhaps a real Ctrl-C, so
  the user's;
- anything else (SystemExit, a KeyboardInterrupt raised by plugin code, a KeyboardInterrupt
  in a thread other than the main one, where signals never land, anything in a worker
  process, which ignores SIGINT): the plugin's.

A watch is *deferred* (a received signal is only recorded, and the code that owns the watch
stops at its next safe point: storing a result is never cut short, an executor stops before
its next unit, the worker pool at its next poll, via `check()`) or *interruptible* (the
handler raises at once: training in this process stops mid-step). Modes nest as a stack per
thread; the innermost wins.

In a worker process `now(kind, keys)` reports to the parent which runs the worker is busy with
(planning, training, a source model), so that a worker that dies or hangs is blamed on those
runs only. Elsewhere it does nothing.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

#: Signals a sweep stops on: Ctrl-C, and what `kill` and job schedulers send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised by the handlers `watch()` installs: the user's SIGINT or SIGTERM, received by this
    process. `signum` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__()
        self.signum = signum


@dataclass
class Watch:
    """What one `watch()` saw: the first stop signal received during it, or None."""

    signum: int | None = None


_received: int | None = None  # the first stop signal received since the outermost watch began
_worker = False
_reporter: Callable[[str, list[str]], None] | None = None


class _Local(threading.local):
    def __init__(self) -> None:
        self.depth = 0  # watches open in this thread
        self.modes: list[bool] = []  # True: interruptible, False: deferred; the innermost is last


_local = _Local()


def _handler(signum: int, frame) -> None:  # runs in the main thread, so _local is the main thread's
    global _received
    if _received is None:
        _received = signum
    if _local.modes and _local.modes[-1]:
        raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def watch(signals: Sequence[int] = STOP_SIGNALS, interruptible: bool = False) -> Iterator[Watch]:
    """Record stop signals received in the block (handlers are installed in the main thread
    only, and restored after); deferred unless `interruptible`. Reentrant."""
    global _received
    seen = Watch()
    main = _main_thread()
    outermost = _local.depth == 0
    if outermost and main:
        _received = None
    installed: dict[int, object] = {}
    if main:
        for signum in signals:
            if signal.getsignal(signum) is not _handler:
                installed[signum] = signal.signal(signum, _handler)
    _local.depth += 1
    _local.modes.append(interruptible)
    try:
        yield seen
    finally:
        _local.modes.pop()
        _local.depth -= 1
        for signum, previous in installed.items():
            signal.signal(signum, previous)
        seen.signum = _received
        if outermost and main:
            _received = None


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside a watch: a stop signal raises `Interrupted` at once. Only around work that does
    not yield to a caller (a generator's caller would run in this mode too)."""
    _local.modes.append(True)
    try:
        yield
    finally:
        _local.modes.pop()


@contextmanager
def deferred() -> Iterator[None]:
    """Inside a watch: a stop signal is only recorded until the block ends."""
    _local.modes.append(False)
    try:
        yield
    finally:
        _local.modes.pop()


def received() -> int | None:
    """The stop signal this process received since the outermost watch began, or None."""
    return _received


def check() -> None:
    """Raise `Interrupted` when a stop signal was received: what an executor calls at its safe
    points (before a unit starts, between two polls of its workers)."""
    if _received is not None:
        raise Interrupted(_received)


def is_users(err: BaseException) -> bool:
    """Whether `err` is the user's stop, to be re-raised, rather than plugin code's exit (that
    call's failure). Exceptions (not BaseExceptions) are never the user's."""
    if isinstance(err, Exception):
        return False
    if isinstance(err, Interrupted):
        return True
    if _worker or not _main_thread():  # signals land in the main thread; workers ignore SIGINT
        return False
    if _received is not None:
        return True
    return isinstance(err, KeyboardInterrupt) and _local.depth == 0


def reraise_users(err: BaseException) -> None:
    """Raise when `err` is the user's stop (see `is_users`): `err` itself when it is a
    KeyboardInterrupt, else `Interrupted` (plugin code that turned the user's Ctrl-C into
    SystemExit must not end the sweep as if it had finished). Else return."""
    if is_users(err):
        if isinstance(err, KeyboardInterrupt):
            raise err
        raise Interrupted(_received or signal.SIGINT) from err


def who(err: BaseException) -> str:
    """'the strategy NAME' or 'the task NAME' whose method raised `err` (the innermost frame
    with such a `self`), else 'plugin code'."""
    from ..api import Strategy, Task

    tb, found = err.__traceback__, None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, (Strategy, Task)):
            found = owner
        tb = tb.tb_next
    if isinstance(found, Strategy):
        return f"the strategy {found.instance_name}"
    if isinstance(found, Task):
        return f"the task {found.instance_name}"
    return "plugin code"


def exit_text(err: BaseException, culprit: str | None = None) -> str:
    """One line for a run that plugin code ended with a BaseException, e.g. 'the strategy full
    exited the process with SystemExit(0) (at my_strategy.py:12)'."""
    import traceback

    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    verb = "exited the process with" if isinstance(err, SystemExit) else "raised"
    return f"{culprit or who(err)} {verb} {err!r}{where}".replace("\n", " ")


# --------------------------------------------------------------------------- worker processes


def in_worker(reporter: Callable[[str, list[str]], None] | None) -> None:
    """This process is a worker: SIGINT is ignored (the parent decides when to stop), every
    BaseException from plugin code is the plugin's, and `now` reports through `reporter`."""
    global _worker, _reporter, _received
    _worker = True
    _reporter = reporter
    # A worker forked from the sweep starts with the sweep's watch (its handlers, its modes,
    # a signal it recorded): none of that is the worker's. SIGTERM kills it, as a fresh
    # process; SIGINT is ignored.
    _received = None
    _local.depth, _local.modes = 0, []
    if _main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def now(kind: str, keys: Sequence[str]) -> None:
    """In a worker: tell the parent the runs `keys` are what it is busy with (`kind`: 'data',
    'source model', 'planning', 'training', 'batched training'). Elsewhere: nothing."""
    if _reporter is not None:
        _reporter(kind, list(keys))
