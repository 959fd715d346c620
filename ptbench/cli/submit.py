"""`ptbench submit FILE`: check a strategy file against the plugin contract, and with --add,
make it a built-in strategy and put it on the leaderboard.

The checks run in a separate process (`ptbench.cli._submit_worker`), and a verdict needs
evidence: submit passes only when that process ended with status 0 and reported a result for
every check that was due (the checks every strategy or task gets, which this process knows
without importing FILE, and those the checking process says `checks_for` chose), none of them
a failure. A process that exits early (`os._exit`, `sys.exit` at import), is killed, crashes
or runs past its time limit is a failure of the check it was running (or of "import").

What the checking process is isolated from: it runs in a session (process group) of its
own, in an empty scratch folder with its own TMPDIR, writes no bytecode next to FILE and uses
a temporary store and no source-model cache (nothing lands in ./results or .ptbench-cache);
it dies with submit, and when it ends, passes its time limit or submit is stopped, its whole
process group is killed (a plugin's background `sleep 300` neither delays submit nor outlives
it). What it is not isolated from: it runs as you, with your files, network and environment,
and a process that leaves its group (setsid, a double fork) outlives it. It is NOT a security
sandbox for hostile code. `--add` then imports FILE into submit itself (to expand the suite)
and runs the suite's runs in a worker process.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ptbench.errors import PtbenchError
from ptbench.results.leaderboard import write as write_leaderboard
from ptbench.registry import default_registry
from ptbench.run.options import RunOptions, resolve_device
from ptbench.results.store import Store
from ptbench.results.suite_report import suite_runs
from ptbench.sweep.outputs import outputs_for
from ptbench.sweep.plan import add_strategies, builtin_suites, expand, load_suite
from ptbench.run import exits
from ptbench.sweep.sweep import SweepInterrupted, run_sweep
from ptbench.cli._common import add_plugins, add_store

NAME = "submit"
HELP = "check a strategy file against the plugin contract, in a separate process (not a sandbox; --add: add it and run the quick suite)"
DESCRIPTION = """\
Import FILE in a separate process and run the contract checks on every strategy (and task) it
defines, each reported by name with pass or FAIL and why:

  name                a SPEC-safe name no other registered plugin uses
  param_grid          params is a dict of non-empty lists of plain values; every instance
                      validates, and its name pastes back as the same instance
  plan_shapes         plans are boolean masks of the right shapes for every registered task's
                      models, copying only what the donor has, and apply cleanly
  source_unmodified   planning leaves the source (donor) model and the fresh target untouched
  plan_deterministic  the same seed gives the same plan
  finished_run        the default instance runs to the end through the real harness on the
                      smoke suite's task within --timeout seconds

A verdict needs evidence: a pass needs the checking process to end with status 0 having
reported a result for every check that was due, none FAIL. SystemExit or KeyboardInterrupt
raised by plugin code fails the check it was raised in; a process that exits early (os._exit,
sys.exit where nothing catches it), is killed, crashes or passes its time limit FAILs the check
it was running (or "import"), and the checks it never began FAIL as "not run".

What the checking process is isolated from: it runs in a session (process group) of its own,
in an empty scratch folder with its own temporary folder (TMPDIR), writes no bytecode next to
FILE, and uses a temporary store and no source-model cache, so nothing lands in your ./results
or .ptbench-cache; when it ends (or passes the time limit, max(300, 3 x --timeout) seconds, or
submit is stopped) it is killed with every process it started in its group, and it dies with
submit. It is NOT a security sandbox: FILE's code runs as you, with your files, network and
environment; it can write anywhere you can, and a process that leaves the group (setsid, a
double fork) outlives it. Submit only files you would run yourself.

With --add, when every check passes, the suite (default: quick) is run for the file's
strategies and the baseline, into the suite's store (results/SUITE.db), in a worker process
(a plugin that exits it fails its run); FILE is imported into submit itself for this, outside
the checking process. Only when every run ends ok is the file copied into the built-in
strategies folder, its strategies added to the suite's file (so a fresh store runs them
too), and the suite's leaderboard rewritten. Without --add nothing is changed.

exit status: 0 every check that was due passed (and, with --add, every run ended ok); 1 a
check failed or did not report (the checking process exited, was killed or timed out); 2 FILE
cannot be read or imported.

usage, with a file of your own (CONTRIBUTING.md's worked example is one):
  python -m ptbench submit largest_filters.py
  python -m ptbench submit largest_filters.py --add
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a Python file defining one or more strategies")
    p.add_argument("--add", action="store_true", help="when every check passes: copy FILE into the strategies folder, run the suite, regenerate the leaderboard")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="time limit of the finished-run check (default: 60)")
    p.add_argument("--into", default=None, metavar="DIR", help="folder --add copies into (default: the built-in strategies folder)")
    p.add_argument("--suite", default="quick", metavar="NAME|FILE", help="suite --add runs the new strategies on (default: quick)")
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds for --add's suite run (default: the suite's)")
    p.add_argument("--device", default="auto", metavar="D", help="device for --add's suite run: auto, cpu or cuda (default: auto)")
    add_store(p, default=None)
    p.add_argument("--leaderboard", default=None, metavar="DIR", help="where --add writes README.md (default: the suite's leaderboard folder)")
    add_plugins(p)


def main(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise PtbenchError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    path = Path(args.file)
    if not path.is_file():
        raise PtbenchError(f"{str(path)!r} is not a file; give the path of a .py file that defines a strategy")
    if path.suffix != ".py":
        raise PtbenchError(f"{str(path)!r} is not a .py file; a strategy is one Python file")
    dest = _destination(path, args.into) if args.add else None

    records, crash = _run_worker(path, args.timeout, args.plugin)
    results, passed = verdict(path, records, crash)
    failed = _report(path, results, crash) or not passed
    if failed:
        if args.add:
            print("not added: fix the failing check(s) and submit again", file=sys.stderr)
        return 1
    if not args.add:
        return 0

    names = sorted({r["plugin"] for r in results if r["kind"] == "strategy"})
    if not names:
        raise PtbenchError(f"--add adds strategies, and {str(path)!r} defines none")
    return _add(path, dest, names, args)


# --------------------------------------------------------------------------- checking


#: The checking process's time limit: at least this many seconds, else 3 x --timeout.
MIN_LIMIT = 300.0


def _run_worker(path: Path, timeout: float, plugins: list[str], limit: float | None = None) -> tuple[list[dict], str | None]:
    """Run the checks in a child process; (records, how it ended when that was not a clean
    exit with status 0, or None). The child runs in its own session, in a scratch folder, and
    its process group is killed when it ends, past `limit` seconds, or when submit is stopped."""
    limit = limit if limit is not None else max(MIN_LIMIT, 3 * timeout)
    source = path.resolve()
    with tempfile.TemporaryDirectory(prefix="ptbench-submit-") as tmp:
        scratch, temp = Path(tmp) / "work", Path(tmp) / "tmp"
        scratch.mkdir()
        temp.mkdir()
        results = Path(tmp) / "results.jsonl"
        command = [sys.executable, "-m", "ptbench.cli._submit_worker", str(source), str(results), "--timeout", str(timeout),
                   "--parent", str(os.getpid())]
        for plugin in plugins:
            command += ["--plugin", os.path.abspath(plugin)]
        env = {**os.environ, "TMPDIR": str(temp), "TEMP": str(temp), "TMP": str(temp), "PYTHONDONTWRITEBYTECODE": "1"}
        crash = None
        with open(Path(tmp) / "stdout", "w") as out, open(Path(tmp) / "stderr", "w+") as err, _stopped_by_sigterm():
            proc = subprocess.Popen(command, cwd=scratch, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                code = None
                crash = f"was still running after {limit:g} s and was stopped"
            finally:
                _kill_group(proc)  # whatever it started (a background `sleep`) goes with it
            err.seek(0)
            last = (err.read().strip().splitlines() or [""])[-1]
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    errors = [r for r in records if r["event"] == "error"]
    if code == 2 and errors:
        raise PtbenchError(errors[-1]["message"].replace(str(source), str(path)))
    if crash is None and code != 0:
        crash = f"exited with status {code}" if code >= 0 else f"was killed by signal {-code} ({_signal_name(-code)})"
        if last:
            crash += f": {last[:300]}"
    if crash is None and not any(r["event"] == "done" for r in records):
        crash = "exited with status 0"  # early: os._exit(0), or sys.exit(0) where nothing caught it
    return records, crash


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown"


class _stopped_by_sigterm:
    """While the checking process runs: SIGTERM ends submit as SystemExit(143) (so that the
    `finally` above kills the checking process's group); Ctrl-C does the same as
    KeyboardInterrupt."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._stop)
        return self

    @staticmethod
    def _stop(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def verdict(path: Path, records: list[dict], crash: str | None) -> tuple[list[dict], bool]:
    """The results to report and whether they make a pass. Evidence only: every check due
    (`contract.required_checks` for each plugin the process named, and what its "done" record
    lists) must have a result, none FAIL, and the process must have ended cleanly. A check it
    began and never finished is a FAIL saying how the process ended; a due check it never
    began, FAIL "not run"; no check at all, FAIL "import"."""
    from ptbench.contract import required_checks

    how = f"the checking process {crash}" if crash else "the checking process ended"
    order: list[tuple[str, str]] = []  # (kind, plugin), as they appear
    by_plugin: dict[tuple[str, str], list[dict]] = {}
    due: dict[tuple[str, str], list[str]] = {}
    started: dict[tuple[str, str], list[dict]] = {}
    done = next((r for r in records if r["event"] == "done"), None)

    def plugin(kind: str, name: str) -> tuple[str, str]:
        key = (kind, name)
        if key not in by_plugin:
            order.append(key)
            by_plugin[key], started[key] = [], []
            due[key] = list(required_checks(kind))
        return key

    for r in records:
        if r["event"] == "start":
            started[plugin(r["kind"], r["plugin"])].append(r)
        elif r["event"] == "result":
            by_plugin[plugin(r["kind"], r["plugin"])].append(r)
    for listed in (done or {}).get("plugins", []):
        key = plugin(listed["kind"], listed["plugin"])
        due[key] += [c for c in listed["checks"] if c not in due[key]]
    for key in order:
        kind, name = key
        reported = {r["check"] for r in by_plugin[key]}
        for r in started[key]:
            if r["check"] not in reported:  # the check in progress when the process ended
                by_plugin[key].append({**r, "event": "result", "passed": False, "seconds": None,
                                       "detail": f"{how} while this check ran"})
                reported.add(r["check"])
        for check in due[key]:
            if check not in reported:
                by_plugin[key].append({"event": "result", "kind": kind, "plugin": name, "check": check, "passed": False,
                                       "seconds": None, "detail": f"not run: {how} before this check"})
    results = [r for key in order for r in by_plugin[key]]
    if not results:
        results = [{"event": "result", "kind": "file", "plugin": path.name, "check": "import", "passed": False, "seconds": None,
                    "detail": f"{how} while importing {path.name}, before any check ran"}]
    passed = crash is None and done is not None and bool(done.get("plugins")) and all(r["passed"] is not False for r in results)
    return results, passed


def _report(path: Path, results: list[dict], crash: str | None) -> bool:
    """Print every result; True when one failed."""
    failed = False
    current = None
    width = max((len(r["check"]) for r in results), default=10)
    for r in results:
        if (r["kind"], r["plugin"]) != current:
            current = (r["kind"], r["plugin"])
            print(f"{r['kind']} {r['plugin']!r} ({path})")
        status = {True: "pass", False: "FAIL", None: "n/a"}[r["passed"]]
        failed |= r["passed"] is False
        print(f"  {status:<4}  {r['check']:<{width}}  {r['detail']}")
    n_fail = sum(r["passed"] is False for r in results)
    n_pass = sum(r["passed"] is True for r in results)
    print(f"{len(results)} checks: {n_pass} passed, {n_fail} failed" + (f", {len(results) - n_pass - n_fail} not applicable" if len(results) > n_pass + n_fail else ""))
    return failed or crash is not None


# --------------------------------------------------------------------------- adding


def _strategies_dir() -> Path:
    import ptbench.strategies

    return Path(ptbench.strategies.__file__).parent


def _destination(path: Path, into: str | None) -> Path:
    """Where --add copies FILE; refuses before any check runs when that cannot work."""
    if not path.stem.isidentifier():
        raise PtbenchError(f"--add needs a file name that is a Python module name (letters, numerals, _), not {path.name!r}")
    folder = Path(into) if into else _strategies_dir()
    if not folder.is_dir():
        raise PtbenchError(f"--into {str(folder)!r} is not a folder")
    dest = folder / path.name
    if dest.exists() and dest.resolve() != path.resolve() and not filecmp.cmp(dest, path, shallow=False):
        raise PtbenchError(f"{str(dest)!r} already exists with other contents; rename your file or remove that one")
    return dest


def _add(path: Path, dest: Path, names: list[str], args: argparse.Namespace) -> int:
    """Run the suite for the new strategies first (FILE loaded as a plugin); only when every
    run ended ok, copy FILE into the strategies folder, add its strategies to the suite's
    file (so that a fresh store keeps them) and rewrite the suite's leaderboard."""
    registry = default_registry(args.plugin)
    try:
        with exits.watch(signals=(signal.SIGINT,), interruptible=True):
            registry.load_plugin(path)
    except PtbenchError:
        raise
    except BaseException as err:  # the file exits (or raises KeyboardInterrupt) when imported here
        exits.reraise_users(err)
        print(f"not added: importing {path} for the suite run raised {err!r}; nothing was copied", file=sys.stderr)
        return 1
    suite = load_suite(args.suite)
    suite_file = builtin_suites().get(suite.name) if suite.name in builtin_suites() else Path(args.suite)
    specs = expand(suite, registry, strategies=[suite.baseline, *names], seeds=args.seeds)
    options = RunOptions(device=resolve_device(args.device))
    where = outputs_for(suite.name, suite.name in builtin_suites(), False, args.seeds not in (None, suite.seeds), args.store, args.leaderboard)
    store = Store(where.store)
    try:
        import torch

        from ptbench.sweep.execute import ProcessExecutor

        # in a worker process (FILE loaded there too), so that a plugin that exits or kills
        # its process fails its run instead of ending submit before its verdict
        executor = ProcessExecutor(1, [str(path), *args.plugin], threads=torch.get_num_threads())
        try:
            done = run_sweep(specs, store, options, progress=False, executor=executor)
        except SweepInterrupted as stop:
            print(f"not added: interrupted after {stop.summary.ran} run(s) of the suite; nothing was copied", file=sys.stderr)
            return stop.exit_status
        print(f"ptbench: suite {suite.name}: {done.summary()}; store: {where.store}", file=sys.stderr)
        if done.failed:
            print("not added: some runs of the suite did not end ok (see above); nothing was copied", file=sys.stderr)
            return 1
        if dest.resolve() != path.resolve():
            shutil.copyfile(path, dest)
        print(f"added: {dest}", file=sys.stderr)
        added = add_strategies(suite_file, names)
        print(f"added to the {suite.name} suite ({suite_file}): {', '.join(added) or 'already listed'}", file=sys.stderr)
        whole = expand(load_suite(str(suite_file)), registry, seeds=args.seeds)
        board, _ = write_leaderboard(suite_runs(store.frame(), whole), where.leaderboard, suite.baseline, registry,
                                     f"ptbench leaderboard: the {suite.name} suite")
    finally:
        store.close()
    print(f"leaderboard: {board}", file=sys.stderr)
    return 0
