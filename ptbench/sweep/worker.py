"""A worker process of `ptbench run --jobs N` (or `--timeout`): runs the units its parent sends.

Started by `ptbench.sweep.execute` as a multiprocessing process (forked from the sweep's own
process, which has imported torch, the harness, the plugin files and the tasks' libraries,
so a new worker costs a fork, not an interpreter start and its imports; spawned where there
is no fork) running `serve(conn, sweep_pid)`. The parent sends one init message ({"sys_path",
"cwd", "environ", "threads"}: what a spawned worker needs, and the same for a forked one),
then units as (id, pickled unit, RunOptions, plugin files), then None to end.
The worker answers:

    ("ready", pid)                       after start-up
    ("start", id)                        a unit was received (the parent's clock starts)
    ("at", kind, [run keys])             what it is busy with now (`ptbench.run.exits.now`)
    ("done", id, [RunResult])            the unit's results
    ("error", id, "ptbench" | "crash", text)   the unit could not run

A worker leads its own process group (so that it and whatever a plugin starts can be killed
together, and so that the terminal's Ctrl-C reaches only the sweep, which decides) and ignores
SIGINT. It dies with its parent: PR_SET_PDEATHSIG on Linux, and a thread that checks every
second that its parent and the sweep are alive. Whatever a plugin does to this process (exit,
crash, hang) is the parent's to notice and to blame on the runs the last "at" message named.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time

#: Seconds between two checks that the parent is still alive.
PARENT_CHECK = 1.0


def die_with_parent(sweep: int) -> None:
    """End this process when its parent ends, even by SIGKILL, or when the sweep's process
    (`sweep`, the parent itself or the forkserver's client) is gone."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent == 1 or not _alive(sweep):  # it died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK)
            if os.getppid() != parent or not _alive(sweep):
                os._exit(1)

    threading.Thread(target=watch, name="ptbench-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reply(conn, message: tuple) -> None:
    """Send a reply; results that cannot be pickled are sent as failed runs saying why."""
    try:
        data = pickle.dumps(message)
    except Exception as err:  # a plugin's diagnostics that pickle cannot carry
        if message[0] != "done":
            data = pickle.dumps(("error", message[1], "crash", f"the reply could not be sent: {type(err).__name__}: {err}"))
        else:
            from dataclasses import replace

            results = []
            for result in message[2]:
                try:
                    pickle.dumps(result)
                    results.append(result)
                except Exception as one:
                    results.append(replace(result, status="failed", diagnostics={},
                                           error=f"result could not be sent from the worker process: {type(one).__name__}: {one}"))
            data = pickle.dumps(("done", message[1], results))
    conn.send_bytes(data)


def serve(conn, sweep: int) -> None:
    """The worker's life: set up, then run units until told to stop (or the parent is gone)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    die_with_parent(sweep)

    from ptbench.errors import PtbenchError
    from ptbench.run import exits

    def report(kind: str, keys: list[str]) -> None:
        try:
            conn.send(("at", kind, keys))
        except OSError:  # the parent is gone
            os._exit(1)

    exits.in_worker(report)
    try:
        init = conn.recv()
    except (EOFError, OSError):
        return
    os.environ.clear()
    os.environ.update(init["environ"])
    try:
        os.chdir(init["cwd"])
    except OSError:
        pass
    for entry in init["sys_path"]:  # modules the parent can import (plugin classes' homes)
        if entry not in sys.path:
            sys.path.append(entry)
    import torch

    torch.set_num_threads(init.get("threads") or 1)
    from ptbench.sweep.units import run_payload

    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        unit_id, data, options, plugins = message
        conn.send(("start", unit_id))
        try:
            reply = ("done", unit_id, run_payload(data, options, plugins))
        except PtbenchError as err:
            reply = ("error", unit_id, "ptbench", str(err))
        except BaseException as err:  # e.g. a unit that cannot be unpickled here
            reply = ("error", unit_id, "crash", f"{type(err).__name__}: {err}".replace("\n", " "))
        try:
            _reply(conn, reply)
        except OSError:
            return
