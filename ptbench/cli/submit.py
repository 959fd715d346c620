"""`ptbench submit FILE`: check a strategy file against the plugin contract, and with --add,
make it a built-in strategy and put it on the leaderboard."""

from __future__ import annotations

import argparse
import filecmp
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ptbench.errors import PtbenchError
from ptbench.results.leaderboard import write as write_leaderboard
from ptbench.registry import default_registry
from ptbench.run.options import RunOptions, resolve_device
from ptbench.results.store import Store
from ptbench.results.suite_report import suite_runs
from ptbench.sweep.outputs import outputs_for
from ptbench.sweep.plan import add_strategies, builtin_suites, expand, load_suite
from ptbench.sweep.sweep import run_sweep
from ptbench.cli._common import add_plugins, add_store

NAME = "submit"
HELP = "check a strategy file against the plugin contract (--add: add it and run the quick suite)"
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

With --add, when every check passes, the suite (default: quick) is run for the file's
strategies and the baseline (into the suite's store, results/SUITE.db); only when every run
ends ok is the file copied into the built-in strategies folder, its strategies added to the
suite's file (so a fresh store runs them too), and the suite's leaderboard rewritten.
Without --add nothing is changed.

exit status: 0 every check passed (and, with --add, every run ended ok); 1 a check failed;
2 FILE cannot be read or imported.

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
    results = [r for r in records if r["event"] == "result"]
    failed = _report(path, results, crash)
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


def _run_worker(path: Path, timeout: float, plugins: list[str]) -> tuple[list[dict], str | None]:
    """Run the checks in a child process; (records, why it died or None)."""
    limit = max(300.0, 3 * timeout)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        command = [sys.executable, "-m", "ptbench.cli._submit_worker", str(path), str(results), "--timeout", str(timeout)]
        for plugin in plugins:
            command += ["--plugin", plugin]
        crash = None
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            crash = f"did not finish within {limit:g}s"
        else:
            if done.returncode == 2:
                lines = [l for l in done.stderr.splitlines() if l.startswith("ptbench: error: ")]
                message = lines[-1] if lines else (done.stderr.strip().splitlines() or ["cannot import the file"])[-1]
                raise PtbenchError(message.removeprefix("ptbench: error: "))
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [""])[-1]
                crash = f"the checking process died (exit status {done.returncode}){': ' + last if last else ''}"
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    if crash:
        started = [r for r in records if r["event"] == "start"]
        finished = {(r["plugin"], r["check"]) for r in records if r["event"] == "result"}
        for r in started:
            if (r["plugin"], r["check"]) not in finished:
                records.append({**r, "event": "result", "passed": False, "detail": crash, "seconds": None})
        if not started:
            records.append({"event": "result", "kind": "file", "plugin": path.name, "check": "import", "passed": False, "detail": crash, "seconds": None})
    return records, crash


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
    registry.load_plugin(path)
    suite = load_suite(args.suite)
    suite_file = builtin_suites().get(suite.name) if suite.name in builtin_suites() else Path(args.suite)
    specs = expand(suite, registry, strategies=[suite.baseline, *names], seeds=args.seeds)
    options = RunOptions(device=resolve_device(args.device))
    where = outputs_for(suite.name, suite.name in builtin_suites(), False, args.seeds not in (None, suite.seeds), args.store, args.leaderboard)
    store = Store(where.store)
    try:
        done = run_sweep(specs, store, options, progress=False)
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
