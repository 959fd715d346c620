"""`ptbench run`: expand a suite into runs, run what is not stored yet, write the leaderboard."""

from __future__ import annotations

import argparse
import math
import os
import sys

from ptbench.run.cache import DEFAULT_DIR as DEFAULT_CACHE
from ptbench.errors import PtbenchError
from ptbench.sweep.execute import make_executor
from ptbench.results.leaderboard import write as write_leaderboard
from ptbench.registry import default_registry
from ptbench.results.suite_report import load_report, suite_runs, write_report
from ptbench.run.options import RunOptions, resolve_device
from ptbench.results.store import Store
from ptbench.sweep.outputs import outputs_for
from ptbench.sweep.plan import builtin_suites, expand, load_suite
from ptbench.sweep.sweep import SweepInterrupted, run_sweep
from ptbench.cli._common import add_plugins, add_store

NAME = "run"
HELP = "run a suite (default: quick): store its runs, write its leaderboard"
DESCRIPTION = """\
Run every (task variant, strategy variant, seed) of a suite that its store does not hold
yet (or holds from other plugin code), store one row per run, then write the leaderboard
of that suite's runs.

SPEC is `name` or `name[key=value,...]`; a value in brackets sweeps several values, and a
parameter a SPEC leaves out takes its default (the first value `list` shows), e.g.
  --strategy 'partial-filters[fraction=[0.25,0.5],freeze=false]'
  --task 'signal-noise[shared=2.0,n_target=20]'
--task / --strategy replace the suite's tasks / strategies (an ad-hoc run); the baseline
strategy (scratch) is what the leaderboard's paired differences are taken against, so
keep it in.

Where results go (--store and --leaderboard override):
  --suite NAME             results/NAME.db and the committed leaderboard/NAME/
  --suite NAME --seeds N   results/NAME.db and results/NAME/ (not the suite as defined)
  --suite FILE.toml        results/STEM.db and results/STEM/
  --task / --strategy      results/adhoc.db and results/adhoc/
A committed leaderboard is rewritten only when its results change, not when only timings
or provenance do.

examples:
  python -m ptbench run                                  # the quick suite
  python -m ptbench run --suite smoke                    # one tiny task, two strategies
  python -m ptbench run --task 'signal-noise[d=500]' --strategy scratch --strategy full
  python -m ptbench run --suite paper                    # 1640 runs: a few minutes
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="quick", metavar="NAME|FILE", help="built-in suite name or a suite .toml (default: quick)")
    p.add_argument("--task", action="append", default=[], metavar="SPEC", help="task SPEC to run instead of the suite's (repeatable; an ad-hoc run)")
    p.add_argument("--strategy", action="append", default=[], metavar="SPEC", help="strategy SPEC to run instead of the suite's (repeatable; an ad-hoc run)")
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds 0..N-1 (default: the suite's)")
    p.add_argument("--device", default="auto", metavar="D", help="auto, cpu or cuda (default: auto)")
    add_store(p, default=None)
    p.add_argument(
        "--leaderboard", default=None, metavar="DIR",
        help="where README.md (and the suite's report pages, if it has any) go (default: see above)",
    )
    p.add_argument("--no-leaderboard", action="store_true", help="do not write the leaderboard")
    add_plugins(p)
    p.add_argument("--force", action="store_true", help="re-run runs that are already stored")
    p.add_argument("--retry-failed", action="store_true", help="re-run only the stored runs that did not end ok")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="per-run time limit; a run past it is stored as timeout")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where image datasets already on disk live (default: $PTBENCH_DATA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="run independent groups in N worker processes (default: 1, in this process)")
    p.add_argument("--executor", default="local", choices=["local", "dask"], help="local (this machine) or dask (a dask.distributed cluster; needs --scheduler)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="the dask scheduler's address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, metavar="DIR", help=f"where trained source models are cached (default: {DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the source-model cache")
    p.add_argument("--no-batch", action="store_true", help="train every run on the per-run path, even where a batched engine could (slow; for checking)")


def main(args: argparse.Namespace) -> int:
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise PtbenchError(f"--timeout must be a finite positive number of seconds, got {args.timeout}")
    if args.data_dir:
        os.environ["PTBENCH_DATA"] = args.data_dir  # read by tasks (and inherited by workers)
    options = RunOptions(
        device=resolve_device(args.device), timeout=args.timeout,
        cache_dir=None if args.no_cache else os.path.abspath(args.cache_dir), batched=not args.no_batch,
    )
    executor = make_executor(args.executor, args.jobs, args.scheduler, args.plugin)
    registry = default_registry(args.plugin)
    suite = load_suite(args.suite)
    if suite.report and not args.no_leaderboard:
        load_report(suite.report)  # a wrong report key fails now, not after the whole sweep
    specs = expand(suite, registry, args.task or None, args.strategy or None, args.seeds)
    if not specs:
        raise PtbenchError("nothing to run: the suite and options select no runs")
    adhoc = bool(args.task or args.strategy)
    where = outputs_for(suite.name, suite.name in builtin_suites(), adhoc, args.seeds not in (None, suite.seeds),
                        args.store, args.leaderboard)
    store = Store(where.store)
    try:
        try:
            done = run_sweep(specs, store, options, args.force, args.retry_failed, progress=not args.quiet, executor=executor)
        except SweepInterrupted as stop:  # every run that finished is already committed
            print(
                f"ptbench: interrupted; {stop.summary.ran} run(s) finished and stored "
                f"({_stored(specs, store)} of this sweep's {len(specs)} are in {where.store}); "
                "run the same command again to resume",
                file=sys.stderr,
            )
            return 130
        if not args.no_leaderboard:
            runs = suite_runs(store.frame(), specs)
            title = "ptbench leaderboard: ad-hoc runs" if adhoc else f"ptbench leaderboard: the {suite.name} suite"
            path, written = write_leaderboard(runs, where.leaderboard, suite.baseline, registry, title)
            state = "written" if written else "unchanged, same results"
            print(f"leaderboard: {path}: {state} ({where.why})", file=sys.stderr)
            if suite.report and not adhoc:  # the suite's own pages (the paper suite's phase diagrams, say)
                for page in write_report(suite.report, runs, specs, where.leaderboard, suite.baseline):
                    print(f"report: {page}", file=sys.stderr)
    finally:
        store.close()
    print(f"ptbench: {done.summary()}; store: {where.store}", file=sys.stderr)
    return 1 if done.failed else 0


def _stored(specs: list, store: Store) -> int:
    """How many of the sweep's runs the store holds (any status)."""
    keys = store.statuses()
    return sum(spec.key in keys for spec in specs)
