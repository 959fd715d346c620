"""Suite reports: extra pages a suite asks for, next to the generic leaderboard.

A suite names its report as `report = "module:function"`; the function is called as
`function(runs, out_dir, baseline) -> list[Path]` with the suite's runs only (the store may
hold other suites' runs too) and writes whatever pages and plots it wants under out_dir. The
harness only resolves the name and filters the runs, so a report may know its tasks (the
paper suite's report, `ptbench.reports.paper`, knows the signal-noise task) without the
harness knowing them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from ptbench.api import RunSpec
from ptbench.errors import PtbenchError

ReportFunction = Callable[[pd.DataFrame, Path, str], list[Path]]


def load_report(ref: str) -> ReportFunction:
    """The function a `module:function` reference names."""
    module_name, _, function_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError, ValueError, TypeError) as err:  # not found; not Python; an empty or relative name
        raise PtbenchError(f"report {ref!r}: cannot import {module_name!r} ({err}); fix the suite's report key") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise PtbenchError(f"report {ref!r}: {module_name} has no function {function_name!r}; fix the suite's report key")
    return function


#: What a report needs when its module does not say (`REQUIRES`): the plots' library.
DEFAULT_REQUIRES = (("matplotlib",), "pip install 'ptbench[plot]'")


def report_requires(ref: str) -> tuple[tuple[str, ...], str]:
    """(modules, pip command) the report needs, checked before a sweep starts: the report
    module's `REQUIRES = (("module", ...), "pip install ...")`, else matplotlib."""
    module = importlib.import_module(ref.partition(":")[0])
    declared = getattr(module, "REQUIRES", None)
    if isinstance(declared, tuple) and len(declared) == 2 and isinstance(declared[1], str):
        return tuple(declared[0]), declared[1]
    return DEFAULT_REQUIRES


def suite_runs(runs: pd.DataFrame, specs: Iterable[RunSpec]) -> pd.DataFrame:
    """The stored runs that belong to these specs: matched by run key, or, for a spec whose
    key the store lacks, by (task, strategy, seed) instance names, so that runs stored before
    a plugin gained a parameter with a default still count."""
    specs = list(specs)
    stored = set(runs["key"])
    keys = {spec.key for spec in specs}
    names = {(s.task.instance_name, s.strategy.instance_name, s.seed) for s in specs if s.key not in stored}
    by_name = pd.Series(list(zip(runs["task"], runs["strategy"], runs["seed"])), index=runs.index).isin(names)
    return runs[runs["key"].isin(keys) | by_name].reset_index(drop=True)


def write_report(ref: str, runs: pd.DataFrame, specs: Iterable[RunSpec], out_dir: str | Path, baseline: str) -> list[Path]:
    """Resolve the report, give it the suite's runs, return the files it wrote."""
    function = load_report(ref)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PtbenchError(f"cannot create the report folder {str(out)!r}: {err.strerror}") from None
    return list(function(suite_runs(runs, specs), out, baseline))
