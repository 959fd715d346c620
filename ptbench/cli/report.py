"""`ptbench report`: regenerate a suite's own pages (its `report`) from a store, without running."""

from __future__ import annotations

import argparse

from ptbench.errors import PtbenchError
from ptbench.registry import default_registry
from ptbench.results.suite_report import load_report, write_report
from ptbench.results.store import open_existing
from ptbench.sweep.outputs import outputs_for
from ptbench.sweep.plan import builtin_suites, check_size, expand, load_suite, seeds_overridden
from ptbench.cli._common import add_plugins, add_seeds

NAME = "report"
HELP = "write a suite's report pages (e.g. the paper suite's plots) from the store"
DESCRIPTION = """\
Write the pages a suite's `report` key names, from the runs of that suite already in the
store (`python -m ptbench run --suite NAME` writes them too, after running).

examples:
  python -m ptbench report --suite paper          # after run --suite paper: results/paper.db -> leaderboard/paper/
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="paper", metavar="NAME|FILE", help="built-in suite name or a suite .toml (default: paper)")
    add_seeds(p)
    p.add_argument("--store", default=None, metavar="PATH", help="SQLite results store (default: results/SUITE.db)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the suite's leaderboard folder)")
    add_plugins(p)


def main(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    if not suite.report:
        raise PtbenchError(
            f"suite {suite.name!r} has no report; `python -m ptbench leaderboard` writes the tables every suite gets"
        )
    load_report(suite.report)  # a wrong report key is reported before anything is read
    check_size(suite, seeds=args.seeds)
    specs = expand(suite, default_registry(args.plugin), seeds=args.seeds)
    where = outputs_for(suite.name, suite.name in builtin_suites(), False, seeds_overridden(args.seeds, suite), args.store, args.out)
    with open_existing(where.store) as store:
        runs = store.frame()
    written = write_report(suite.report, runs, specs, where.leaderboard, suite.baseline)
    for path in written:
        print(path)
    return 0
