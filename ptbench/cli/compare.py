"""`ptbench compare`: two stores side by side, or two strategies within one store, paired."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from ptbench.errors import PtbenchError
from ptbench.registry import default_registry
from ptbench.results.query import select_spec
from ptbench.results.stats import Interval, mean_ci, paired_deltas
from ptbench.results.store import open_existing
from ptbench.sweep.outputs import DEFAULT_STORE
from ptbench.cli._common import HTML_LIBS, check_out_file, require, write_out

NAME = "compare"
HELP = "compare two stores, or two strategies in one store: paired differences per task"
DESCRIPTION = """\
Side-by-side markdown tables with paired differences and 95% t intervals over seeds.

Two stores (before and after a change, CPU against GPU): runs are paired by task, strategy
and seed (instance names, as the leaderboard prints them); one table per task, one row per
strategy, B minus A. --strategy / --task narrow what is shown.

Two strategies in one store (default results/quick.db): runs are paired by task and seed;
one row per task, the second strategy minus the first. Each SPEC must pick one strategy
variant per task (a parameter it leaves out takes its default). Two stores: give --store
twice, e.g. `--store before.db --store after.db`, or `--metric target_seconds` for CPU
against GPU.

--format md (the default), csv or json (one row per compared pair of groups, numbers as
numbers: the metric in its unit, % or s), latex (booktabs tables) or html (a page of the
same tables); to standard output, or to the file --out names.

examples (on the store the quick suite leaves):
  python -m ptbench compare --strategy full --strategy 'partial-filters[fraction=0.5]'
  python -m ptbench compare --strategy scratch --strategy 'full[freeze=True]' --metric target_seconds
  python -m ptbench compare --strategy full --strategy l2-sp --task digits-split --out results/compare.md
  python -m ptbench compare --strategy scratch --strategy full --format csv
"""

METRICS = {
    # name: (scale, decimals, unit of the mean, unit of the difference)
    "target_acc": (100.0, 1, "%", "pp"),
    "target_train_acc": (100.0, 1, "%", "pp"),
    "source_acc": (100.0, 1, "%", "pp"),
    "target_seconds": (1.0, 3, "s", "s"),
    "source_seconds": (1.0, 3, "s", "s"),
}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", action="append", default=[], metavar="PATH",
                   help=f"a results store; give it twice to compare two stores (default: {DEFAULT_STORE})")
    p.add_argument("--strategy", action="append", default=[], metavar="SPEC",
                   help="with one store: exactly two, compared with each other; with two stores: only these")
    p.add_argument("--task", action="append", default=[], metavar="SPEC", help="only tasks matching SPEC (repeatable)")
    p.add_argument("--metric", default="target_acc", choices=sorted(METRICS), help="what to compare (default: target_acc)")
    p.add_argument("--format", default="md", choices=FORMATS, help="md, csv, json, latex or html (default: md)")
    p.add_argument("--out", default=None, metavar="FILE", help="write the comparison here (default: standard output)")


FORMATS = ["md", "csv", "json", "latex", "html"]


@dataclass
class Comparison:
    """One comparison: its markdown page, and the same tables as data for the other formats."""

    markdown: str
    title: str
    metric: str
    notes: list[str] = field(default_factory=list)
    #: (heading or "", headers, display rows) per table
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # one per row, numbers as numbers


# --------------------------------------------------------------------------- selecting runs


def select(runs: pd.DataFrame, column: str, specs: list[str], registry=None) -> pd.DataFrame:
    if not specs:
        return runs
    mask = pd.Series(False, index=runs.index)
    for spec in specs:
        hit = select_spec(runs, column, spec, registry)
        if not hit.any():
            raise PtbenchError(f"no stored run has a {column} matching {spec!r}; `python -m ptbench export` lists the runs")
        mask |= hit
    return runs[mask]


def _ok(path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    with open_existing(path) as store:
        runs = store.frame()
    return runs, runs[runs["status"] == "ok"]


# --------------------------------------------------------------------------- formatting


def _fmt(interval: Interval, metric: str, signed: bool = False) -> str:
    scale, decimals, _, _ = METRICS[metric]
    return interval.fmt(scale=scale, decimals=decimals, signed=signed)


def _values(prefix: str, interval: Interval, metric: str) -> dict[str, float | None]:
    scale = METRICS[metric][0]

    def number(v: float) -> float | None:
        return None if interval.n == 0 or not math.isfinite(v) else float(v) * scale

    return {prefix: number(interval.mean), f"{prefix}_low": number(interval.low), f"{prefix}_high": number(interval.high)}


def _verdict(delta: Interval) -> str:
    if delta.above_zero:
        return "higher"
    if delta.below_zero:
        return "lower"
    return "—" if delta.n >= 2 else "n/a"


def _provenance(runs: pd.DataFrame) -> str:
    def values(column: str, width: int | None = None) -> str:
        found = sorted({str(v)[:width] if width else str(v) for v in runs[column].dropna()})
        return ", ".join(found) or "?"

    return (f"{len(runs)} runs, ptbench {values('ptbench_version')}, torch {values('torch_version')}, "
            f"commit {values('git_commit', 10)}, device {values('device')}")


def _pair(a: pd.DataFrame, b: pd.DataFrame, on: list[str], metric: str) -> pd.DataFrame:
    try:
        return paired_deltas(a, b, on, metric)
    except ValueError as err:  # two runs under one name: the store mixes two versions of a plugin
        raise PtbenchError(f"cannot pair runs: {err}; narrow the comparison with --task/--strategy") from None


def _table(rows: list[list[str]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


# --------------------------------------------------------------------------- two stores


def compare_stores(path_a: str, path_b: str, tasks: list[str], strategies: list[str], metric: str) -> str:
    """The comparison's markdown page."""
    return stores_comparison(path_a, path_b, tasks, strategies, metric).markdown


def stores_comparison(path_a: str, path_b: str, tasks: list[str], strategies: list[str], metric: str) -> Comparison:
    all_a, a = _ok(path_a)
    all_b, b = _ok(path_b)
    registry = default_registry()
    a = select(select(a, "task", tasks, registry), "strategy", strategies, registry)
    b = select(select(b, "task", tasks, registry), "strategy", strategies, registry)
    on = ["task", "strategy", "seed"]
    pairs = _pair(a, b, on, metric)
    _, _, unit, dunit = METRICS[metric]
    name_a, name_b = Path(path_a).name, Path(path_b).name
    if name_a == name_b:
        name_a, name_b = path_a, path_b
    lines = [
        f"# Compare `{name_a}` (A) with `{name_b}` (B): {metric}",
        "",
        f"- A: `{path_a}`: {_provenance(all_a)}",
        f"- B: `{path_b}`: {_provenance(all_b)}",
        "",
        f"Runs are paired by task, strategy and seed; both columns use the paired runs only. B − A is the "
        f"paired difference in {dunit} with a 95% t interval over seeds; *higher*/*lower* means the interval "
        "excludes zero. " + _unpaired(a, b, pairs),
        "",
    ]
    result = Comparison("", lines[0][2:], metric, [line for line in lines[2:] if line])
    if pairs.empty:
        result.notes.append("No runs are in both stores: nothing to compare.")
        result.markdown = "\n".join(lines + ["No runs are in both stores: nothing to compare.", ""])
        return result
    summary_at = len(lines)
    verdicts = {"higher": 0, "lower": 0}
    for task, group in pairs.groupby("task", sort=True):
        body = []
        for strategy, g in group.groupby("strategy", sort=True):
            delta = mean_ci(g["delta"])
            verdict = _verdict(delta)
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
            below = int((g["delta"] < 0).sum())
            body.append([f"`{strategy}`", _fmt(mean_ci(g["a"]), metric), _fmt(mean_ci(g["b"]), metric),
                         _fmt(delta, metric, signed=True), str(len(g)), f"{below}/{len(g)}", verdict])
            result.records.append({"task": task, "strategy": strategy, "metric": metric, **_values("a", mean_ci(g["a"]), metric),
                                   **_values("b", mean_ci(g["b"]), metric), **_values("b_minus_a", delta, metric),
                                   "pairs": len(g), "seeds_b_below_a": below, "verdict": verdict})
        headers = ["strategy", f"A {unit} [95% CI]", f"B {unit} [95% CI]", f"B − A ({dunit}) [95% CI]", "pairs", "seeds B < A", "B vs A"]
        lines += [f"## `{task}`", "", _table(body, headers), ""]
        result.tables.append((task, headers, body))
    total = pairs.groupby(["task", "strategy"]).ngroups
    summary = (f"Summary: of {total} (task, strategy) combinations, B is higher in {verdicts['higher']} and lower in "
               f"{verdicts['lower']} beyond seed noise.")
    lines[summary_at:summary_at] = [summary, ""]
    result.notes.append(summary)
    result.markdown = "\n".join(lines)
    return result


def _unpaired(a: pd.DataFrame, b: pd.DataFrame, pairs: pd.DataFrame) -> str:
    only_a, only_b = len(a) - len(pairs), len(b) - len(pairs)
    if not only_a and not only_b:
        return "Every run has a partner."
    return f"Without a partner (left out): {only_a} run(s) of A, {only_b} of B."


# --------------------------------------------------------------------------- two strategies


def _one_variant(rows: pd.DataFrame, spec: str) -> pd.DataFrame:
    """Check that SPEC picked one strategy variant per task."""
    counts = rows.groupby("task")["strategy"].nunique()
    many = counts[counts > 1]
    if len(many):
        task = many.index[0]
        found = sorted(rows[rows["task"] == task]["strategy"].unique())
        raise PtbenchError(
            f"--strategy {spec!r} matches {len(found)} variants on task {task}: {', '.join(found[:4])}; "
            "give the parameters that tell them apart"
        )
    return rows


def compare_strategies(path: str, spec_a: str, spec_b: str, tasks: list[str], metric: str) -> str:
    """The comparison's markdown page."""
    return strategies_comparison(path, spec_a, spec_b, tasks, metric).markdown


def strategies_comparison(path: str, spec_a: str, spec_b: str, tasks: list[str], metric: str) -> Comparison:
    all_runs, ok = _ok(path)
    registry = default_registry()
    ok = select(ok, "task", tasks, registry)
    a = _one_variant(ok[select_spec(ok, "strategy", spec_a, registry)], spec_a)
    b = _one_variant(ok[select_spec(ok, "strategy", spec_b, registry)], spec_b)
    for spec, rows in ((spec_a, a), (spec_b, b)):
        if rows.empty:
            raise PtbenchError(f"no ok run in {path!r} has a strategy matching {spec!r}; `python -m ptbench export` lists the runs")
    pairs = _pair(a, b, ["task", "seed"], metric)
    _, _, unit, dunit = METRICS[metric]
    lines = [
        f"# Compare `{spec_a}` (A) with `{spec_b}` (B): {metric}",
        "",
        f"Store `{path}`: {_provenance(all_runs)}.",
        "",
        f"Runs are paired by task and seed (same target data, same initialisation of whatever is not inherited); "
        f"both columns use the paired runs only. B − A is the paired difference in {dunit} with a 95% t interval over "
        "seeds; *higher*/*lower* means the interval excludes zero. " + _unpaired(a, b, pairs),
        "",
    ]
    result = Comparison("", lines[0][2:], metric, [line for line in lines[2:] if line])
    if pairs.empty:
        result.notes.append("The two strategies share no (task, seed): nothing to compare.")
        result.markdown = "\n".join(lines + ["The two strategies share no (task, seed): nothing to compare.", ""])
        return result
    names = {t: (g["strategy"].iloc[0]) for t, g in a.groupby("task")}
    names_b = {t: (g["strategy"].iloc[0]) for t, g in b.groupby("task")}
    body = []
    for task, g in pairs.groupby("task", sort=True):
        delta = mean_ci(g["delta"])
        below = int((g["delta"] < 0).sum())
        body.append([f"`{task}`", f"`{names[task]}`", _fmt(mean_ci(g["a"]), metric), f"`{names_b[task]}`", _fmt(mean_ci(g["b"]), metric),
                     _fmt(delta, metric, signed=True), str(len(g)), f"{below}/{len(g)}", _verdict(delta)])
        result.records.append({"task": task, "strategy_a": names[task], "strategy_b": names_b[task], "metric": metric,
                               **_values("a", mean_ci(g["a"]), metric), **_values("b", mean_ci(g["b"]), metric),
                               **_values("b_minus_a", delta, metric), "pairs": len(g), "seeds_b_below_a": below,
                               "verdict": _verdict(delta)})
    headers = ["task", "A", f"A {unit} [95% CI]", "B", f"B {unit} [95% CI]", f"B − A ({dunit}) [95% CI]", "pairs", "seeds B < A", "B vs A"]
    lines += [_table(body, headers), ""]
    result.tables.append(("", headers, body))
    result.markdown = "\n".join(lines)
    return result


# --------------------------------------------------------------------------- entry point


def render(result: Comparison, fmt: str) -> str:
    """The comparison in one of FORMATS."""
    if fmt == "md":
        return result.markdown
    if fmt == "csv":
        return pd.DataFrame.from_records(result.records).to_csv(index=False) if result.records else "task\n"
    if fmt == "json":
        _, _, unit, dunit = METRICS[result.metric]
        return json.dumps({"title": result.title, "metric": result.metric, "unit": unit, "difference_unit": dunit,
                           "notes": result.notes, "rows": result.records}, indent=1) + "\n"
    if fmt == "latex":
        return _latex(result)
    if fmt == "html":
        return _html(result)
    raise PtbenchError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def _plain(cell: str) -> str:
    return cell[1:-1] if len(cell) > 1 and cell.startswith("`") and cell.endswith("`") else cell


def _latex(result: Comparison) -> str:
    from ptbench.results.leaderboard import _latex_escape

    lines = [f"% {result.title}: generated by ptbench compare; needs \\usepackage{{booktabs}}", ""]
    for heading, headers, rows in result.tables:
        text = tabulate([[_plain(c) for c in row] for row in rows], headers=[f"@@H{i}@@" for i in range(len(headers))],
                        tablefmt="latex_booktabs", disable_numparse=True)
        for i, h in enumerate(headers):
            text = text.replace(f"@@H{i}@@", _latex_escape(h).replace("−", "$-$"))
        lines += ["\\begin{table}[ht]", "\\centering", "\\small",
                  f"\\caption{{{_latex_escape(heading or result.title)}}}", text.replace("−", "$-$"), "\\end{table}", ""]
    if not result.tables:
        lines += [f"% {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="ptbench"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:80rem;padding:0 1rem;color:#1d2330}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}th,td{border:1px solid #d9dde5;padding:0.3rem 0.55rem;text-align:left}
thead th{background:#f2f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:0.92em}</style>
</head><body>
<h1>{{ title }}</h1>
{% for note in notes %}<p>{{ note }}</p>
{% endfor %}
{% for heading, headers, rows in tables %}
{% if heading %}<h2><code>{{ heading }}</code></h2>{% endif %}
<table><thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rows %}<tr>{% for cell in row %}<td{% if not loop.first and cell[:1] != "`" %} class="num"{% endif %}>{% if cell[:1] == "`" %}<code>{{ cell[1:-1] }}</code>{% else %}{{ cell }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endfor %}
</body></html>
"""


def _html(result: Comparison) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    notes = [note.replace("`", "").replace("*", "") for note in result.notes]
    return env.from_string(_PAGE).render(title=result.title.replace("`", ""), notes=notes, tables=result.tables)


def main(args: argparse.Namespace) -> int:
    if args.out:
        check_out_file(args.out)  # before reading anything
    if args.format == "html":
        require((HTML_LIBS[0][:1], HTML_LIBS[1]), "--format html")
    stores = args.store or [str(DEFAULT_STORE)]
    if len(stores) > 2:
        raise PtbenchError(f"compare takes one or two --store, got {len(stores)}")
    if len(stores) == 2:
        result = stores_comparison(stores[0], stores[1], args.task, args.strategy, args.metric)
    else:
        if len(args.strategy) != 2:
            raise PtbenchError(
                "with one store, give exactly two --strategy SPECs to compare (or a second --store to compare stores); "
                f"got {len(args.strategy)}"
            )
        result = strategies_comparison(stores[0], args.strategy[0], args.strategy[1], args.task, args.metric)
    text = render(result, args.format)
    if args.out:
        write_out(args.out, text)
        print(args.out)
    else:
        sys.stdout.write(text)
    return 0
