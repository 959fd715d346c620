"""Options several commands share, so they read the same everywhere."""

from __future__ import annotations

import argparse
import os

DEFAULT_STORE = os.path.join("results", "ptbench.db")


def add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=DEFAULT_STORE, metavar="PATH", help=f"SQLite results store (default: {DEFAULT_STORE})")


def add_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="FILE",
        help="a Python file defining extra tasks or strategies (repeatable)",
    )
