"""`python -m ptbench COMMAND`: the command line, assembled from `ptbench.cli`.

A PtbenchError (a user's mistake) is printed as one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ptbench import __version__
from ptbench.errors import PtbenchError

ORDER = ["run", "list", "leaderboard", "export", "compare", "show", "submit"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: also exit 2, one line
        self.exit(2, f"ptbench: error: {message} (see --help)\n")


def _command_modules():
    import ptbench.cli as package

    names = [i.name for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"ptbench.cli.{n}") for n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m ptbench",
        description="ptbench: does inheriting a trained model's parameters help a new task, or hurt it? "
        "Runs transfer strategies on tasks over seeds, stores one row per run in SQLite and "
        "writes a leaderboard with paired differences to training from scratch.",
    )
    parser.add_argument("--version", action="version", version=f"ptbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules():
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(p)
        p.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except PtbenchError as err:
        print(f"ptbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
