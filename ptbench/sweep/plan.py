"""Suites: TOML files that name task and strategy SPECs, expanded into RunSpecs.

    description = "what this suite is for"
    seeds = 5
    baseline = "scratch"            # what paired differences are taken against
    report = "module:function"      # optional: writes extra pages next to the leaderboard

    [[sweep]]                       # one or more; every task x every strategy x every seed
    tasks = ["signal-noise[shared=2.0]"]
    strategies = ["scratch", "partial-filters[fraction=[0.25,0.5]]"]

    [labels]                        # optional: short names for tasks in leaderboards
    "signal-noise[shared=2.0]" = "strong shared signal"

A bare `tasks`/`strategies` pair at the top level is one sweep. Built-in suites live in
`suites/`; `--suite` takes a built-in name or a path. A label is keyed by a task SPEC exactly
as a sweep writes it, or by a task instance name (as the leaderboard prints it); a SPEC
that sweeps several variants labels each of them, with the swept values appended.

Seeds are a count N (seeds 0..N-1) or, from the command line, an explicit list (`--seeds
3-7`, `--seeds 0,2,4`). `count_runs` sizes a sweep from the parsed SPECs alone, so that an
absurd one (`--seeds 1000000000`) is refused before anything is built.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from ptbench.errors import PtbenchError, closest
from ptbench.spec import format_value, parse_spec

if TYPE_CHECKING:  # the plugin API imports torch: sizing a sweep must not wait for it
    from ptbench.api import RunSpec, Strategy, Task
    from ptbench.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {"description", "seeds", "baseline", "report", "sweep", "tasks", "strategies", "labels"}
SWEEP_KEYS = {"tasks", "strategies", "seeds"}
NEWLINE = b"\n"
#: More planned runs than this are refused unless asked for (`run --allow-huge`).
MAX_RUNS = 10**6
#: The longest task label a suite may give (labels are headings, not descriptions).
MAX_LABEL = 80
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_REPORT_REF = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")

#: Seeds as a count (0..N-1) or an explicit sequence of seeds (a list, or a range).
Seeds = Union[int, Sequence[int]]


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
    #: task SPEC (as a sweep writes it) or task instance name -> a short label
    labels: dict[str, str] = field(default_factory=dict)


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
    where = repr(str(path))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise PtbenchError(
            f"suite file {where} is not UTF-8 text (byte {err.object[err.start]:#04x} on line "
            f"{err.object[:err.start].count(NEWLINE) + 1}, offset {err.start}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise PtbenchError(f"cannot read suite file {where}: {err.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PtbenchError(f"suite file {where} is not valid TOML: {err}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise PtbenchError(f"suite file {where} nests arrays or tables too deeply to read; a suite needs at most a few levels") from None
    return parse_suite(raw, path.stem, str(path))


def parse_suite(raw: dict, name: str, where: str) -> Suite:
    unknown = set(raw) - TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise PtbenchError(f"suite {where!r}: unknown key {key!r}{closest(key, TOP_KEYS)}; valid: {', '.join(sorted(TOP_KEYS))}")
    seeds = raw.get("seeds", 5)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise PtbenchError(f"suite {where!r}: seeds must be a positive integer, got {seeds!r}")
    sweeps_raw = raw.get("sweep", [])
    if not isinstance(sweeps_raw, list):
        raise PtbenchError(
            f"suite {where!r}: sweep must be a list of tables, each under a [[sweep]] header, got {type(sweeps_raw).__name__} {sweeps_raw!r}"[:300]
        )
    sweeps_raw = list(sweeps_raw)
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
    if report is not None and (not isinstance(report, str) or not _REPORT_REF.fullmatch(report)):
        raise PtbenchError(
            f"suite {where!r}: report must be a string 'module:function' (a dotted module path and a function name, "
            f"e.g. \"ptbench.reports.paper:write_report\"), got {report!r}"[:300]
        )
    labels = _labels(raw.get("labels", {}), where)
    return Suite(
        name=name, description=str(raw.get("description", "")), seeds=seeds, baseline=baseline, sweeps=sweeps, report=report,
        labels=labels,
    )


def _labels(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PtbenchError(f"suite {where!r}: labels must be a table of task SPEC = \"label\" (a [labels] section)")
    out = {}
    for key, label in value.items():
        if not isinstance(label, str) or not label.strip() or "\n" in label or len(label) > MAX_LABEL:
            raise PtbenchError(
                f"suite {where!r}: the label of {key!r} must be one line of 1 to {MAX_LABEL} characters, got {label!r}"[:300]
            )
        out[str(key)] = label.strip()
    return out


def task_labels(suite: Suite, registry: "Registry") -> dict[str, str]:
    """The suite's labels keyed by task instance name (what the store and leaderboards call
    a task). A label keyed by a SPEC that sweeps several variants is given to each, with its
    swept values appended: `digits (n_target=10)`. A key that names no task of the suite is
    an error, so that a typo does not silently drop a label."""
    if not suite.labels:
        return {}
    out: dict[str, str] = {}
    instances: set[str] = set()
    specs = list(dict.fromkeys(spec for sweep in suite.sweeps for spec in sweep.tasks))
    for spec in specs:
        name, fixed = parse_spec(spec)
        tasks = registry.task(name).expand(fixed)
        instances.update(t.instance_name for t in tasks)
        if spec not in suite.labels:
            continue
        label = suite.labels[spec]
        swept = [k for k, values in fixed.items() if len(values) > 1]
        for task in tasks:
            suffix = ", ".join(f"{k}={format_value(task.values[k])}" for k in swept)
            out.setdefault(task.instance_name, f"{label} ({suffix})" if suffix else label)
    for key, label in suite.labels.items():
        if key in instances:
            out[key] = label  # an instance name is the more specific key
        elif key not in specs:
            raise PtbenchError(
                f"suite {suite.name!r}: the label key {key!r} is neither a task SPEC of its sweeps nor a task instance "
                f"name{closest(key, specs + sorted(instances))}; copy the SPEC exactly as a sweep writes it"
            )
    return out


def expand_task_specs(registry: "Registry", specs: list[str]) -> "list[Task]":
    out: list = []
    for spec in specs:
        name, fixed = parse_spec(spec)
        out.extend(registry.task(name).expand(fixed))
    return out


def expand_strategy_specs(registry: "Registry", specs: list[str]) -> "list[Strategy]":
    out: list = []
    for spec in specs:
        name, fixed = parse_spec(spec)
        out.extend(registry.strategy(name).expand(fixed))
    return out


def check_seeds(seeds: Seeds | None) -> None:
    """A seed count must be positive; a list of seeds non-empty, of non-negative integers."""
    if seeds is None:
        return
    if isinstance(seeds, (bool, str)) or not isinstance(seeds, (int, Sequence)):
        raise PtbenchError(f"--seeds must be a positive integer or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise PtbenchError(f"--seeds must be a positive integer, got {seeds}")
        return
    if len(seeds) == 0:
        raise PtbenchError("--seeds names no seed; give N (seeds 0..N-1), A-B or A,B,C")
    if isinstance(seeds, range):
        bad = [s for s in (seeds[0], seeds[-1]) if s < 0]
    else:
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise PtbenchError(f"--seeds: a seed is a non-negative integer, got {bad[0]!r}")


def seed_list(seeds: Seeds | None, sweep: Sweep, suite: Suite) -> Sequence[int]:
    """The seeds a sweep runs: an explicit list as given, else range(count)."""
    if seeds is not None and not isinstance(seeds, int):
        return seeds
    return range(seeds or sweep.seeds or suite.seeds)


def seeds_overridden(seeds: Seeds | None, suite: Suite) -> bool:
    """Whether --seeds asks for other seeds than the suite's own (0..suite.seeds-1)."""
    if seeds is None:
        return False
    if isinstance(seeds, int):
        return seeds != suite.seeds
    return len(seeds) != suite.seeds or list(seeds) != list(range(suite.seeds))


def _spec_size(spec: str) -> int:
    """How many instances a SPEC names: the product of its value lists' lengths."""
    _, fixed = parse_spec(spec)
    return math.prod(len(values) for values in fixed.values())


def count_runs(
    suite: Suite,
    tasks: list[str] | None = None,
    strategies: list[str] | None = None,
    seeds: Seeds | None = None,
) -> int:
    """The runs `expand` would plan (before dropping duplicates between sweeps, so at least
    as many), from the SPECs' value lists alone: nothing is imported or instantiated."""
    check_seeds(seeds)
    total = 0
    counted = set()
    for sweep in suite.sweeps:
        task_specs, strategy_specs = tuple(tasks or sweep.tasks), tuple(strategies or sweep.strategies)
        n_seeds = len(seed_list(seeds, sweep, suite))
        if (task_specs, strategy_specs, n_seeds) in counted:  # overrides made two sweeps the same
            continue
        counted.add((task_specs, strategy_specs, n_seeds))
        n_tasks = sum(_spec_size(s) for s in task_specs)
        n_strategies = sum(_spec_size(s) for s in strategy_specs)
        total += n_tasks * n_strategies * n_seeds
    return total


def check_size(
    suite: Suite,
    tasks: list[str] | None = None,
    strategies: list[str] | None = None,
    seeds: Seeds | None = None,
    allow_huge: bool = False,
) -> int:
    """The planned run count; more than MAX_RUNS is refused (a PtbenchError) unless allowed."""
    n = count_runs(suite, tasks, strategies, seeds)
    if n > MAX_RUNS and not allow_huge:
        raise PtbenchError(
            f"this sweep plans {n:,} runs, more than {MAX_RUNS:,}: check --seeds and the SPECs' value lists, "
            "or pass --allow-huge if you mean it"
        )
    return n


def expand(
    suite: Suite,
    registry: "Registry",
    tasks: list[str] | None = None,
    strategies: list[str] | None = None,
    seeds: Seeds | None = None,
) -> "list[RunSpec]":
    """RunSpecs of the suite, with command-line overrides; duplicates are dropped in order.
    `seeds` is a count (0..N-1) or a list of seeds; None takes each sweep's (or the suite's)."""
    from ptbench.api import RunSpec

    check_seeds(seeds)
    specs: dict[str, RunSpec] = {}
    for sweep in suite.sweeps:
        task_list = expand_task_specs(registry, tasks or sweep.tasks)
        strategy_list = expand_strategy_specs(registry, strategies or sweep.strategies)
        for task in task_list:
            for seed in seed_list(seeds, sweep, suite):
                for strategy in strategy_list:
                    spec = RunSpec(task, strategy, int(seed))
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
