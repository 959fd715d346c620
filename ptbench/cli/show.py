"""`ptbench show RUN`: one run's stored record, diagnostics included."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from ptbench.errors import PtbenchError
from ptbench.registry import default_registry
from ptbench.results import glossary
from ptbench.results.query import find_run
from ptbench.results.store import open_existing
from ptbench.cli._common import add_store
from ptbench.results.flatten import dotted

NAME = "show"
HELP = "print one run's record, diagnostics included"
DESCRIPTION = """\
Print one stored run: identity, status, accuracies, timings, provenance and the task's
diagnostics (measured after source training and after target training), with the first and
last record of any trajectory. --json prints the whole record, trajectories included.

RUN is the run's key; or TASK|STRATEGY|SEED (or STRATEGY|SEED) with the instance names the
leaderboard prints, or SPECs naming them (a parameter a SPEC leaves out takes its default;
a task SPEC that matches nothing that way matches any settings of what it leaves out); or
any part of a key or name that only one run contains. When several runs match, they are
listed.

--legend prints the glossary the leaderboard ends with: every column, and every diagnostic
name (of RUN, or of the store's runs; of every name ptbench knows when there is no store).

examples (on the store the quick suite leaves, results/quick.db):
  python -m ptbench show 'digits-split|full|0'
  python -m ptbench show --legend
  python -m ptbench show 'digits-split[width=8,source_steps=200,target_steps=60]|partial-filters[fraction=0.5,freeze=False]|3'
  python -m ptbench show --json 'digits-split|scratch|4'
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", nargs="?", help="run key, TASK|STRATEGY|SEED, or a part of either that names one run")
    add_store(p)
    p.add_argument("--json", action="store_true", help="the whole record as JSON (trajectories included)")
    p.add_argument("--legend", action="store_true", help="print what every column and diagnostic name means")


def _number(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:.2f}%"


def render(run: pd.Series) -> str:
    params = lambda d: ", ".join(f"{k}={v}" for k, v in d.items()) or "none"  # noqa: E731
    fields = [
        ("run", f"{run['task']} | {run['strategy']} | seed {run['seed']}"),
        ("key", run["key"]),
        ("status", run["status"] + (f": {run['error']}" if run.get("error") else "")),
        ("target accuracy", f"test {_pct(run['target_acc'])}, train {_pct(run['target_train_acc'])}"),
        ("source accuracy", _pct(run["source_acc"]) if _present(run["source_acc"]) else "- (no source model: the strategy inherits nothing)"),
        ("seconds", f"source {_number(run['source_seconds']) if _present(run['source_seconds']) else '-'}, target {_number(run['target_seconds'])}"),
        ("device", run["device"]),
        ("task parameters", params(run["task_params"])),
        ("strategy parameters", params(run["strategy_params"])),
        ("produced by", f"ptbench {run['ptbench_version']}, torch {run['torch_version']}, commit {run['git_commit']}, "
                        f"host {run['host']}, {run['created_at']}"),
    ]
    lines = [tabulate(fields, tablefmt="plain")]
    diagnostics = dict(run["diagnostics"] or {})
    trajectory = diagnostics.pop("trajectory", None) or {}
    sides = {k: v for k, v in diagnostics.items() if isinstance(v, dict)}
    loose = {k: v for k, v in diagnostics.items() if not isinstance(v, dict)}
    if loose:
        sides = {"": loose, **sides}
    if sides:
        keys = list(dict.fromkeys(k for side in sides.values() for k in dotted(side)))
        flat = {name: dotted(side) for name, side in sides.items()}
        body = [[k] + [_number(flat[name].get(k, "")) for name in sides] for k in keys]
        lines += ["", "diagnostics (measured after training)", tabulate(body, headers=["", *sides], tablefmt="simple", disable_numparse=True)]
    else:
        lines += ["", "diagnostics: none (this task records none)"]
    for side, records in trajectory.items():
        if not records:
            continue
        first, last = records[0], records[-1]
        keys = [k for k in first if k != "step"]
        body = [[k, _number(first.get(k)), _number(last.get(k))] for k in keys]
        lines += ["", f"trajectory of the {side} model: {len(records)} records, steps {first.get('step')} to {last.get('step')} "
                  "(--json for all)",
                  tabulate(body, headers=["", f"step {first.get('step')}", f"step {last.get('step')}"], tablefmt="simple", disable_numparse=True)]
    return "\n".join(lines) + "\n"


def _jsonable(run: pd.Series) -> dict[str, Any]:
    out = {}
    for key, value in run.items():
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        out[key] = value
    return out


def legend(runs: pd.DataFrame | None, baseline: str = "scratch") -> str:
    """The glossary as plain text: of these runs' diagnostics, or of every known name."""
    g = glossary.glossary(runs, baseline, every=runs is None)
    return glossary.plain(g)


def main(args: argparse.Namespace) -> int:
    if args.legend:
        runs = None
        if Path(args.store).is_file():
            with open_existing(args.store) as store:
                runs = store.frame()
            if args.run:
                runs = find_run(runs, args.run, default_registry()).to_frame().T
        elif args.run:
            raise PtbenchError(f"no results store at {args.store!r}; `show --legend` without RUN prints every known name")
        print(legend(runs), end="")
        return 0
    if not args.run:
        raise PtbenchError("give the RUN to show (a key, TASK|STRATEGY|SEED, or part of one), or --legend")
    with open_existing(args.store) as store:
        runs = store.frame()
    run = find_run(runs, args.run, default_registry())
    if args.json:
        print(json.dumps(_jsonable(run), indent=1, sort_keys=True))
    else:
        print(render(run), end="")
    return 0
