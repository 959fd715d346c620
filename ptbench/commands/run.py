"""`ptbench run`: expand a suite into runs, run what is not stored yet, write the leaderboard."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import PtbenchError
from ..leaderboard import write as write_leaderboard
from ..registry import default_registry
from ..runner import RunOptions, resolve_device
from ..store import Store
from ..suites import expand, load_suite
from ..sweep import run_sweep
from ._common import add_plugins, add_store

NAME = "run"
HELP = "run a suite (default: quick) and update the store and leaderboard"
DESCRIPTION = """\
Run every (task variant, strategy variant, seed) of a suite that the store does not hold yet,
store one row per run, then regenerate the leaderboard.

SPEC is `name` or `name[key=value,...]`; a value in brackets sweeps several values, e.g.
  --strategy 'partial-filters[fraction=[0.25,0.5],freeze=false]'
  --task 'signal-noise[shared=2.0,n_target=20]'
--task / --strategy replace the suite's tasks / strategies; the baseline strategy (scratch)
is what the leaderboard's paired differences are taken against, so keep it in.

examples:
  python -m ptbench run                                  # the quick suite
  python -m ptbench run --suite paper --seeds 10
  python -m ptbench run --task 'signal-noise[d=500]' --strategy scratch --strategy full
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="quick", metavar="NAME|FILE", help="built-in suite name or a suite .toml (default: quick)")
    p.add_argument("--task", action="append", default=[], metavar="SPEC", help="task SPEC to run instead of the suite's (repeatable)")
    p.add_argument("--strategy", action="append", default=[], metavar="SPEC", help="strategy SPEC to run instead of the suite's (repeatable)")
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds 0..N-1 (default: the suite's)")
    p.add_argument("--device", default="auto", metavar="D", help="auto, cpu or cuda (default: auto)")
    add_store(p)
    p.add_argument("--leaderboard", default="leaderboard", metavar="DIR", help="where README.md goes (default: leaderboard)")
    p.add_argument("--no-leaderboard", action="store_true", help="do not regenerate the leaderboard")
    add_plugins(p)
    p.add_argument("--force", action="store_true", help="re-run runs that are already stored")
    p.add_argument("--retry-failed", action="store_true", help="re-run only the stored runs that did not end ok")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="per-run time limit; a run past it is stored as timeout")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where image datasets already on disk live (default: $PTBENCH_DATA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout <= 0:
        raise PtbenchError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.data_dir:
        os.environ["PTBENCH_DATA"] = args.data_dir  # read by tasks (and inherited by workers)
    options = RunOptions(device=resolve_device(args.device), timeout=args.timeout)
    registry = default_registry(args.plugin)
    suite = load_suite(args.suite)
    specs = expand(suite, registry, args.task or None, args.strategy or None, args.seeds)
    if not specs:
        raise PtbenchError("nothing to run: the suite and options select no runs")
    store = Store(args.store)
    try:
        report = run_sweep(specs, store, options, args.force, args.retry_failed, progress=not args.quiet)
        if not args.no_leaderboard:
            path = write_leaderboard(store.frame(), args.leaderboard, suite.baseline, registry)
            print(f"leaderboard: {path}", file=sys.stderr)
    finally:
        store.close()
    print(f"ptbench: {report.summary()}; store: {args.store}", file=sys.stderr)
    return 1 if report.failed else 0
