"""Options several commands share, so they read the same everywhere, and the checks they make
before doing anything (output paths, optional libraries)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

from ptbench.errors import PtbenchError
from ptbench.sweep.outputs import DEFAULT_STORE

#: Optional libraries by what they are for: (import names, the pip command that brings them).
HTML_LIBS = (("jinja2", "plotly"), "pip install 'ptbench[html]'")
PLOT_LIBS = (("matplotlib",), "pip install 'ptbench[plot]'")


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


# --------------------------------------------------------------------------- --seeds


def parse_seeds(text: str) -> int | Sequence[int]:
    """`N` (seeds 0..N-1, a count), `A-B` (A to B inclusive) or `A,B,C`. A count stays an int
    (its checks are `expand`'s); a range stays a `range`, so that its size is known without
    listing it."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
        first, last = int(m.group(1)), int(m.group(2))
        if last < first:
            raise argparse.ArgumentTypeError(f"{text!r}: a range A-B needs A <= B")
        return range(first, last + 1)
    if re.fullmatch(r"\d+(\s*,\s*\d+)+,?", text):
        return list(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    raise argparse.ArgumentTypeError(f"{text!r} is not N (seeds 0..N-1), A-B (inclusive) or A,B,C")


def add_seeds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds", type=parse_seeds, default=None, metavar="N|A-B|A,B,C",
        help="N: seeds 0..N-1; A-B: A to B inclusive; A,B,C: those seeds (default: the suite's)",
    )


# --------------------------------------------------------------------------- output paths


def check_out_file(path: str | os.PathLike) -> Path:
    """A file the command will write: not a folder, in a folder that exists. Checked before
    any work, so a mistake costs nothing; a place that refuses the write (read-only) is
    caught when writing (`write_out`)."""
    out = Path(path)
    where = repr(str(path))
    if out.is_dir():
        raise PtbenchError(f"--out {where} is a folder; give a file path such as {str(out / 'out.txt')!r}")
    parent = out.parent
    for folder in [parent, *parent.parents]:
        if folder.exists() and not folder.is_dir():
            raise PtbenchError(f"--out {where}: {str(folder)!r} is a file, not a folder; pass another --out")
    if not parent.exists():
        raise PtbenchError(f"--out {where}: the folder {str(parent)!r} does not exist; create it or pass another --out")
    return out


def write_out(path: str | os.PathLike, text: str) -> None:
    """Write an output file, or say in one line why it cannot be written."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as err:
        raise PtbenchError(f"cannot write {str(path)!r}: {err.strerror or err}; pass another --out") from None


def check_out_folder(path: str | os.PathLike) -> Path:
    """A folder the command will write into (created if missing): it must not be a file,
    nor lie under one."""
    out = Path(path)
    for folder in [out, *out.parents]:
        if folder.exists() and not folder.is_dir():
            what = "is a file" if folder == out else f"lies under {str(folder)!r}, which is a file"
            raise PtbenchError(f"--out {str(path)!r} {what}; pass a folder")
    return out


# --------------------------------------------------------------------------- optional libraries


def missing(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here (looked up, not imported)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
            found = False
        if not found:
            out.append(name)
    return out


def require(libs: tuple[Sequence[str], str], what: str) -> None:
    """A PtbenchError naming the pip command when one of `libs` is not installed."""
    modules, pip = libs
    absent = missing(modules)
    if absent:
        raise PtbenchError(f"{what} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed: {pip}")
