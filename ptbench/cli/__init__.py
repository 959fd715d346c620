"""`python -m ptbench COMMAND`: the command line, assembled from `ptbench.cli`.

A PtbenchError (a user's mistake) is printed as one line and exits with status 2; anything
else is a bug and keeps its traceback. A reader that closes the pipe early (`show --json RUN
| head -1`) ends the command quietly, with the shell's status for it (141: SIGPIPE).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import NoReturn

from ptbench import __version__
from ptbench.errors import PtbenchError

ORDER = ["run", "list", "leaderboard", "export", "compare", "show", "submit"]
#: The exit status after the reader closed the pipe (128 + SIGPIPE, as a shell reports it).
EXIT_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: also exit 2, one line
        self.exit(2, f"ptbench: error: {message} (see --help)\n")


def _command_names() -> list[str]:
    import ptbench.cli as package

    names = [i.name for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _command_modules(only: str | None = None):
    """The command modules; `only`: just that one (a command imports what it needs, and
    some need torch: `run --seeds 1000000000` is refused before any of it is imported)."""
    names = _command_names()
    if only in names:
        names = [only]
    return [importlib.import_module(f"ptbench.cli.{n}") for n in names]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m ptbench",
        description="ptbench: does inheriting a trained model's parameters help a new task, or hurt it? "
        "Runs transfer strategies on tasks over seeds, stores one row per run in SQLite and "
        "writes a leaderboard with paired differences to training from scratch.",
    )
    parser.add_argument("--version", action="version", version=f"ptbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules(only):
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
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else [*argv]  # (`list` here is the list command's module)
    parser = build_parser(only=argv[0] if argv else None)
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


def exit_now(code: int) -> NoReturn:
    """End this process with `code` as the interpreter would, less its teardown: the atexit
    handlers run (multiprocessing reaps its children, weakref finalizers such as a
    TemporaryDirectory's clean up, logging flushes and closes its handlers), the standard
    streams are flushed, then `os._exit`. Why: freeing torch, pandas and the rest module by
    module at exit took 0.5-0.6 s of every command (measured on 2 cores: 2.6-2.8 s against
    2.1 s for the same imports), and nothing a user can see depends on it; every file a
    command writes is closed (and the store committed) before it returns. Under a profiler
    or a tracer (`python -m cProfile -m ptbench ...`, coverage), which write their results
    at the interpreter's exit, this is a plain `sys.exit`."""
    import atexit

    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
                pass
        os._exit(code)


def console() -> NoReturn:
    """The installed `ptbench` command: `python -m ptbench`'s ending (`exit_now`) for it too,
    so that typing `ptbench run` does not cost the half second of teardown that
    `python -m ptbench run` saves."""
    exit_now(main())


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it again at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured output, say)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
