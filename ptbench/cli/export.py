"""`ptbench export`: one row per run, as csv, json or parquet."""

from __future__ import annotations

import argparse
import sys

from ptbench.results.store import export_frame, open_existing
from ptbench.cli._common import add_store

NAME = "export"
HELP = "export every stored run as csv, json or parquet"
DESCRIPTION = """\
One row per stored run (diagnostics as one JSON column), from --store (default
results/quick.db, the store the Quick start leaves).

examples:
  python -m ptbench export --format csv --out results/runs.csv
  python -m ptbench export --format json --store results/quick.db --out results/runs.json
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store(p)
    p.add_argument("--format", default="csv", choices=["csv", "json", "parquet"], help="output format (default: csv)")
    p.add_argument("--out", default=None, metavar="FILE", help="output file (default: standard output; parquet needs a file)")


def main(args: argparse.Namespace) -> int:
    with open_existing(args.store) as store:
        text = export_frame(store.frame(), args.format, args.out)
    if text is not None:
        sys.stdout.write(text)
    return 0
