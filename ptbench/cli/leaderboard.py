"""`ptbench leaderboard`: write a leaderboard from a store, without running anything."""

from __future__ import annotations

import argparse

from ptbench.errors import PtbenchError
from ptbench.registry import default_registry
from ptbench.results.leaderboard import write
from ptbench.results.store import open_existing
from ptbench.results.suite_report import suite_runs
from ptbench.sweep.outputs import DEFAULT_STORE, RESULTS_DIR, outputs_for
from ptbench.sweep.plan import builtin_suites, expand, load_suite
from ptbench.cli._common import add_plugins

NAME = "leaderboard"
HELP = "write a leaderboard (markdown or an HTML site) from a results store"
DESCRIPTION = """\
With --suite NAME: the leaderboard of that suite's runs, read from its store
(results/NAME.db) into its folder (leaderboard/NAME/ for a built-in suite), as `run --suite
NAME` writes it; a committed page is rewritten only when its results change. Without
--suite: every run of --store (default results/quick.db) into --out (default
results/STEM/).

--format html writes a self-contained static site, DIR/index.html with one page per run,
that opens from file:// with no network (needs ptbench[html]: Jinja2 and plotly).

examples:
  python -m ptbench leaderboard --suite quick
  python -m ptbench leaderboard --suite quick --format html --out results/site
  python -m ptbench leaderboard --store results/quick.db --out results/everything
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default=None, metavar="NAME|FILE", help="only this suite's runs (default: every run of the store)")
    p.add_argument("--store", default=None, metavar="PATH", help=f"SQLite results store (default: results/SUITE.db with --suite, else {DEFAULT_STORE})")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the suite's leaderboard folder, or results/STEM/)")
    p.add_argument("--format", default="md", choices=["md", "html"], help="md (README.md) or html (index.html and run pages) (default: md)")
    add_plugins(p)
    p.add_argument("--baseline", default=None, metavar="NAME", help="strategy the paired differences are taken against (default: the suite's, else scratch)")


def main(args: argparse.Namespace) -> int:
    registry = default_registry(args.plugin)
    if args.suite:
        suite = load_suite(args.suite)
        where = outputs_for(suite.name, suite.name in builtin_suites(), False, False, args.store, args.out)
        store_path, out, baseline = where.store, where.leaderboard, args.baseline or suite.baseline
        title = f"ptbench leaderboard: the {suite.name} suite"
        specs = expand(suite, registry)
    else:
        store_path = args.store or str(DEFAULT_STORE)
        out = args.out or RESULTS_DIR / _stem(store_path)
        baseline, title, specs = args.baseline or "scratch", f"ptbench leaderboard: {store_path}", None
    with open_existing(store_path) as store:
        runs = store.frame()
    if specs is not None:
        runs = suite_runs(runs, specs)
    if args.format == "html":
        try:
            from ptbench.results.html import write_site
        except ImportError as err:
            raise PtbenchError(f"--format html needs Jinja2 and plotly ({err}): pip install 'ptbench[html]'") from None
        print(write_site(runs, out, baseline, title))
        return 0
    path, written = write(runs, out, baseline, registry, title)
    print(f"{path}" + ("" if written else " (unchanged: same results)"))
    return 0


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem or "store"
