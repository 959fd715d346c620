"""`ptbench leaderboard`: regenerate the markdown leaderboard from a store."""

from __future__ import annotations

import argparse

from ptbench.results.leaderboard import write
from ptbench.registry import default_registry
from ptbench.results.store import open_existing
from ptbench.cli._common import add_plugins, add_store

NAME = "leaderboard"
HELP = "write DIR/README.md from the results store"


def configure(p: argparse.ArgumentParser) -> None:
    add_store(p)
    p.add_argument("--out", default="leaderboard", metavar="DIR", help="output folder (default: leaderboard)")
    add_plugins(p)
    p.add_argument("--baseline", default="scratch", metavar="NAME", help="strategy the paired differences are taken against")


def main(args: argparse.Namespace) -> int:
    with open_existing(args.store) as store:
        path = write(store.frame(), args.out, args.baseline, default_registry(args.plugin))
    print(path)
    return 0
