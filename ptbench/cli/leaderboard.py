"""`ptbench leaderboard`: write a leaderboard from a store, without running anything."""

from __future__ import annotations

import argparse
import sys

from ptbench.registry import default_registry
from ptbench.results.leaderboard import TABLE_FORMATS, render_table, write, write_html
from ptbench.results.store import open_existing
from ptbench.results.suite_report import suite_runs
from ptbench.sweep.outputs import DEFAULT_STORE, RESULTS_DIR, outputs_for
from ptbench.sweep.plan import builtin_suites, expand, load_suite, task_labels
from ptbench.cli._common import HTML_LIBS, add_plugins, check_out_file, check_out_folder, require, write_out

NAME = "leaderboard"
HELP = "write a leaderboard (markdown or an HTML site) from a results store"
DESCRIPTION = """\
With --suite NAME: the leaderboard of that suite's runs, read from its store
(results/NAME.db) into its folder (leaderboard/NAME/ for a built-in suite), as `run --suite
NAME` writes it; a committed page is rewritten only when its results change. Without
--suite: every run of --store (default results/quick.db) into --out (default
results/STEM/).

--format html writes a self-contained static site, DIR/index.html with run pages and
DIR/plotly.min.js, that opens from file:// with no network (needs ptbench[html]: Jinja2 and
plotly); it too is rewritten only when its results change. --format csv, json or latex
gives the same numbers as a table (one row per task and strategy; LaTeX: one booktabs table
per task) on standard output, or in the file --out names. A suite's task labels head its
sections; the page ends with a glossary of its columns and diagnostics.

examples:
  python -m ptbench leaderboard --suite quick
  python -m ptbench leaderboard --suite quick --format html --out results/site
  python -m ptbench leaderboard --store results/quick.db --out results/everything
  python -m ptbench leaderboard --suite quick --format csv --out results/leaderboard.csv
  python -m ptbench leaderboard --suite quick --format latex
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default=None, metavar="NAME|FILE", help="only this suite's runs (default: every run of the store)")
    p.add_argument("--store", default=None, metavar="PATH", help=f"SQLite results store (default: results/SUITE.db with --suite, else {DEFAULT_STORE})")
    p.add_argument("--out", default=None, metavar="DIR|FILE",
                   help="md/html: output folder (default: the suite's leaderboard folder, or results/STEM/); "
                        "csv/json/latex: output file (default: standard output)")
    p.add_argument("--format", default="md", choices=["md", "html", *TABLE_FORMATS],
                   help="md (README.md), html (index.html and run pages), or the summary as csv, json or latex (default: md)")
    add_plugins(p)
    p.add_argument("--baseline", default=None, metavar="NAME", help="strategy the paired differences are taken against (default: the suite's, else scratch)")


def main(args: argparse.Namespace) -> int:
    table = args.format in TABLE_FORMATS
    if table and args.out:
        check_out_file(args.out)  # before reading anything
    elif args.out:
        check_out_folder(args.out)
    if args.format == "html":
        require(HTML_LIBS, "--format html")
    registry = default_registry(args.plugin)
    labels: dict[str, str] = {}
    if args.suite:
        suite = load_suite(args.suite)
        where = outputs_for(suite.name, suite.name in builtin_suites(), False, False, args.store, args.out)
        store_path, out, baseline = where.store, where.leaderboard, args.baseline or suite.baseline
        title = f"ptbench leaderboard: the {suite.name} suite"
        specs = expand(suite, registry)
        labels = task_labels(suite, registry)
    else:
        store_path = args.store or str(DEFAULT_STORE)
        out = args.out or RESULTS_DIR / _stem(store_path)
        baseline, title, specs = args.baseline or "scratch", f"ptbench leaderboard: {store_path}", None
    with open_existing(store_path) as store:
        runs = store.frame()
    if specs is not None:
        runs = suite_runs(runs, specs)
    if table:
        text = render_table(runs, args.format, baseline, labels, title)
        if args.out:
            write_out(args.out, text)
            print(args.out)
        else:
            sys.stdout.write(text)
        return 0
    if args.format == "html":
        index, written = write_html(runs, out, baseline, registry, title, labels)
        print(f"{index}" + ("" if written else " (unchanged: same results)"))
        return 0
    path, written = write(runs, out, baseline, registry, title, labels)
    print(f"{path}" + ("" if written else " (unchanged: same results)"))
    return 0


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem or "store"
