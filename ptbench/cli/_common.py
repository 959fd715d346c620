"""Options several commands share, so they read the same everywhere."""

from __future__ import annotations

import argparse

from ptbench.sweep.outputs import DEFAULT_STORE


def add_store(parser: argparse.ArgumentParser, default: str | None = str(DEFAULT_STORE)) -> None:
    help = f"SQLite results store (default: {default})" if default else (
        "SQLite results store (default: results/SUITE.db for a suite, results/adhoc.db for --task/--strategy runs)"
    )
    parser.add_argument("--store", default=default, metavar="PATH", help=help)


def add_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="FILE",
        help="a Python file defining extra tasks or strategies (repeatable)",
    )
