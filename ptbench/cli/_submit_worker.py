"""The separate process of `ptbench submit`: import one plugin file, run the contract checks on
everything it defines, and write each result as a JSON line to a file.

Separate because a submitted file is untrusted code: whatever it does at import or in a check
(register modules, change global state, call sys.exit or os._exit, hang, crash the
interpreter, start processes) happens in this process, which the parent started in a session
of its own, in a scratch folder, and kills with everything it started when it ends. The parent
believes a verdict only from evidence: the records below, an exit status of 0, and a result
for every check it knows is due. Results go to a file, not to stdout, so that a plugin printing
at import cannot corrupt them.

    python -m ptbench.cli._submit_worker FILE RESULTS.jsonl [--timeout S] [--plugin F ...] [--parent PID]

Records, in order: {"event": "error", "message"} when FILE cannot be imported (exit status
2); then per plugin and check a "start" record before it runs and a "result" record after;
then one "done" record listing, per plugin, the checks `checks_for` chose. Exit status 0 when
the checks ran (whatever they found).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ptbench.api import Strategy
from ptbench.contract import CheckEnv, check_name_of, listed_checks, run_checks
from ptbench.errors import PtbenchError
from ptbench.registry import Registry, default_registry
from ptbench.run import exits


def load(path: Path) -> list[type]:
    """The plugin classes the file defines (strategies first), each registered once."""
    mine = Registry()
    try:
        mine.load_plugin(path)
    except BaseException as err:
        if isinstance(err, PtbenchError):
            raise
        exits.reraise_users(err)
        # anything else escaped load_plugin: SystemExit or KeyboardInterrupt from the file's code
        raise PtbenchError(f"plugin file {str(path)!r} failed to import: {type(err).__name__}: {err}") from None
    return [mine.strategies[n] for n in sorted(mine.strategies)] + [mine.tasks[n] for n in sorted(mine.tasks)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptbench-submit-worker")
    parser.add_argument("file")
    parser.add_argument("results")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("--parent", type=int, default=None, help="end when this process (submit) ends")
    args = parser.parse_args(argv)
    if args.parent:
        from ptbench.sweep.worker import die_with_parent

        die_with_parent(args.parent)
    exits.in_worker(None)  # a session of its own: no Ctrl-C reaches it, so any KeyboardInterrupt is the plugin's
    path = Path(args.file)
    with open(args.results, "a", encoding="utf-8") as out:
        try:
            classes = load(path)
            env = CheckEnv(default_registry(args.plugin), origin=path, timeout=args.timeout)
        except PtbenchError as err:
            message = f"{err}".replace("\n", " ")
            _write(out, {"event": "error", "message": message})
            print(f"ptbench: error: {message}", file=sys.stderr)
            return 2
        listed = []
        for cls in classes:
            kind = "strategy" if issubclass(cls, Strategy) else "task"
            # A start record first: if this check hangs or ends the process, the parent knows
            # which one it was.
            start = lambda check: _write(out, {"event": "start", "kind": kind, "plugin": cls.name, "check": check})  # noqa: E731
            for result in run_checks(cls, env, on_start=start):
                _write(out, {
                    "event": "result", "kind": kind, "plugin": cls.name, "check": result.check,
                    "passed": result.passed, "detail": result.detail, "seconds": round(result.seconds, 3),
                })
            listed.append({"kind": kind, "plugin": cls.name, "checks": [check_name_of(c) for c in listed_checks(cls)]})
        _write(out, {"event": "done", "plugins": listed})
    return 0


def _write(out, record: dict) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
