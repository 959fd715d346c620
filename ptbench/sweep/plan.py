"""Suites: TOML files that name task and strategy SPECs, expanded into RunSpecs.

    description = "what this suite is for"
    seeds = 5
    baseline = "scratch"            # what paired differences are taken against
    report = "module:function"      # optional: writes extra pages next to the leaderboard

    [[sweep]]                       # one or more; every task x every strategy x every seed
    tasks = ["signal-noise[shared=2.0]"]
    strategies = ["scratch", "partial-filters[fraction=[0.25,0.5]]"]

A bare `tasks`/`strategies` pair at the top level is one sweep. Built-in suites live in
`suites/`; `--suite` takes a built-in name or a path.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ptbench.api import RunSpec, Strategy, Task
from ptbench.errors import PtbenchError, closest
from ptbench.spec import parse_spec
from ptbench.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {"description", "seeds", "baseline", "report", "sweep", "tasks", "strategies"}
SWEEP_KEYS = {"tasks", "strategies", "seeds"}


@dataclass
class Sweep:
    tasks: list[str]
    strategies: list[str]
    seeds: int | None = None


@dataclass
class Suite:
    name: str
    description: str = ""
    seeds: int = 5
    baseline: str = "scratch"
    sweeps: list[Sweep] = field(default_factory=list)
    report: str | None = None  # "module:function" (see ptbench.results.suite_report)


def suites_dir() -> Path:
    import ptbench.suites

    return Path(ptbench.suites.__file__).parent


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(suites_dir().glob("*.toml"))}


def load_suite(name_or_path: str) -> Suite:
    builtins = builtin_suites()
    if name_or_path in builtins:
        path = builtins[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.suffix == ".toml" or not path.is_file():
            raise PtbenchError(
                f"unknown suite {name_or_path!r}{closest(name_or_path, builtins)}; "
                f"valid: {', '.join(builtins)} or a path to a .toml file"
            )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise PtbenchError(f"suite file {str(path)!r} is not valid TOML: {err}") from None
    except OSError as err:
        raise PtbenchError(f"cannot read suite file {str(path)!r}: {err.strerror}") from None
    return parse_suite(raw, path.stem, str(path))


def parse_suite(raw: dict, name: str, where: str) -> Suite:
    unknown = set(raw) - TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise PtbenchError(f"suite {where!r}: unknown key {key!r}{closest(key, TOP_KEYS)}; valid: {', '.join(sorted(TOP_KEYS))}")
    seeds = raw.get("seeds", 5)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise PtbenchError(f"suite {where!r}: seeds must be a positive integer, got {seeds!r}")
    sweeps_raw = list(raw.get("sweep", []))
    if "tasks" in raw or "strategies" in raw:
        sweeps_raw.insert(0, {k: raw[k] for k in ("tasks", "strategies") if k in raw})
    if not sweeps_raw:
        raise PtbenchError(f"suite {where!r} has no [[sweep]] and no tasks/strategies: nothing to run")
    sweeps = []
    for i, item in enumerate(sweeps_raw):
        if not isinstance(item, dict):
            raise PtbenchError(f"suite {where!r}: sweep {i + 1} must be a table")
        bad = set(item) - SWEEP_KEYS
        if bad:
            raise PtbenchError(f"suite {where!r}: sweep {i + 1} has unknown key {sorted(bad)[0]!r}; valid: tasks, strategies, seeds")
        for key in ("tasks", "strategies"):
            value = item.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise PtbenchError(f"suite {where!r}: sweep {i + 1} needs {key} = a non-empty list of SPEC strings")
        sweep_seeds = item.get("seeds")
        if sweep_seeds is not None and (not isinstance(sweep_seeds, int) or isinstance(sweep_seeds, bool) or sweep_seeds < 1):
            raise PtbenchError(f"suite {where!r}: sweep {i + 1} seeds must be a positive integer")
        sweeps.append(Sweep(list(item["tasks"]), list(item["strategies"]), sweep_seeds))
    baseline = raw.get("baseline", "scratch")
    if not isinstance(baseline, str) or not baseline:
        raise PtbenchError(f"suite {where!r}: baseline must be a strategy name such as \"scratch\", got {baseline!r}")
    report = raw.get("report")
    if report is not None and (not isinstance(report, str) or ":" not in report):
        raise PtbenchError(f"suite {where!r}: report must be a string 'module:function', got {report!r}")
    return Suite(
        name=name, description=str(raw.get("description", "")), seeds=seeds, baseline=baseline, sweeps=sweeps, report=report
    )


def expand_task_specs(registry: Registry, specs: list[str]) -> list[Task]:
    out: list[Task] = []
    for spec in specs:
        name, fixed = parse_spec(spec)
        out.extend(registry.task(name).expand(fixed))
    return out


def expand_strategy_specs(registry: Registry, specs: list[str]) -> list[Strategy]:
    out: list[Strategy] = []
    for spec in specs:
        name, fixed = parse_spec(spec)
        out.extend(registry.strategy(name).expand(fixed))
    return out


def expand(
    suite: Suite,
    registry: Registry,
    tasks: list[str] | None = None,
    strategies: list[str] | None = None,
    seeds: int | None = None,
) -> list[RunSpec]:
    """RunSpecs of the suite, with command-line overrides; duplicates are dropped in order."""
    if seeds is not None and seeds < 1:
        raise PtbenchError(f"--seeds must be a positive integer, got {seeds}")
    specs: dict[str, RunSpec] = {}
    for sweep in suite.sweeps:
        task_list = expand_task_specs(registry, tasks or sweep.tasks)
        strategy_list = expand_strategy_specs(registry, strategies or sweep.strategies)
        n_seeds = seeds or sweep.seeds or suite.seeds
        for task in task_list:
            for seed in range(n_seeds):
                for strategy in strategy_list:
                    spec = RunSpec(task, strategy, seed)
                    specs.setdefault(spec.key, spec)
    return list(specs.values())


def add_strategies(path: Path, names: list[str]) -> list[str]:
    """Add strategy names to the first sweep of a suite file, keeping its text (comments,
    layout) as it is; returns the names that were not listed yet. The edited file must parse
    as a suite listing them, or it is left unchanged and a PtbenchError says why."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    suite = parse_suite(tomllib.loads(text), path.stem, str(path))
    listed = set(suite.sweeps[0].strategies)
    new = [n for n in names if n not in listed]
    if not new:
        return []
    found = re.search(r"^\s*strategies\s*=\s*\[", text, flags=re.M)
    start = found.end() - 1 if found else -1
    end = _closing_bracket(text, start) if start != -1 else -1
    if end == -1:
        raise PtbenchError(f"cannot find the strategies list of the first sweep in {str(path)!r}; add {', '.join(new)} by hand")
    body = text[start + 1 : end].rstrip()
    multiline = "\n" in text[start:end]
    addition = "".join(f'\n    "{n}",' for n in new) if multiline else "".join(f', "{n}"' for n in new)
    if multiline and body and not body.endswith(","):
        body += ","
    edited = text[: start + 1] + body + addition + ("\n" if multiline else "") + text[end:]
    again = parse_suite(tomllib.loads(edited), path.stem, str(path))
    if not set(new) <= set(again.sweeps[0].strategies):
        raise PtbenchError(f"could not add {', '.join(new)} to {str(path)!r}; add them by hand")
    path.write_text(edited, encoding="utf-8")
    return new


def _closing_bracket(text: str, start: int) -> int:
    """Index of the `]` closing the `[` at `start`, skipping strings and comments."""
    depth, i, quote = 0, start, None
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            i = text.find("\n", i)
            if i == -1:
                return -1
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1
