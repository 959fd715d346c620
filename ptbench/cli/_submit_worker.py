"""The separate process of `ptbench submit`: import one plugin file, run the contract checks on
everything it defines, and write each result as a JSON line to a file.

Separate because a submitted file is untrusted code: whatever it does at import (register
modules, change global state, call sys.exit, hang, crash the interpreter) stays in this
process, and the parent can still report the checks that finished. Results go to a file, not
to stdout, so that a plugin printing at import cannot corrupt them.

    python -m ptbench.cli._submit_worker FILE RESULTS.jsonl [--timeout S] [--plugin F ...]

Exit status 0 when the checks ran (whatever they found), 2 with one line on stderr when the
file cannot be read or imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ptbench.api import Strategy
from ptbench.contract import CheckEnv, check_name_of, checks_for, run_check
from ptbench.errors import PtbenchError
from ptbench.registry import Registry, default_registry


def load(path: Path) -> list[type]:
    """The plugin classes the file defines (strategies first), each registered once."""
    mine = Registry()
    try:
        mine.load_plugin(path)
    except (Exception, SystemExit, KeyboardInterrupt) as err:
        if isinstance(err, PtbenchError):
            raise
        # anything else escaped load_plugin: SystemExit or KeyboardInterrupt from the file's code
        raise PtbenchError(f"plugin file {str(path)!r} failed to import: {type(err).__name__}: {err}") from None
    return [mine.strategies[n] for n in sorted(mine.strategies)] + [mine.tasks[n] for n in sorted(mine.tasks)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptbench-submit-worker")
    parser.add_argument("file")
    parser.add_argument("results")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--plugin", action="append", default=[])
    args = parser.parse_args(argv)
    path = Path(args.file)
    try:
        classes = load(path)
        env = CheckEnv(default_registry(args.plugin), origin=path, timeout=args.timeout)
    except PtbenchError as err:
        print(f"ptbench: error: {err}".replace("\n", " "), file=sys.stderr)
        return 2
    with open(args.results, "a", encoding="utf-8") as out:
        for cls in classes:
            kind = "strategy" if issubclass(cls, Strategy) else "task"
            for check in checks_for(cls):
                # A start record first: if this check hangs or kills the process, the parent
                # knows which one it was.
                _write(out, {"event": "start", "kind": kind, "plugin": cls.name, "check": check_name_of(check)})
                result = run_check(check, cls, env)
                _write(out, {
                    "event": "result", "kind": kind, "plugin": cls.name, "check": result.check,
                    "passed": result.passed, "detail": result.detail, "seconds": round(result.seconds, 3),
                })
    return 0


def _write(out, record: dict) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
