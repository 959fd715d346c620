"""The images suite's tests, as data: what `reports/images.py` renders and
`reports/images_prose.py` puts into sentences.

Seeds are the unit of replication. Every number is a paired difference to scratch (same task,
same seed: same split, same target images, same fresh initialisation of what is not
inherited), in accuracy units here and in percentage points on the page. A family of tests is
one table (its cells), the depth-trend rows, the fraction-trend columns, the seed averages, or
the AnB − BnB contrasts; each family is corrected by Holm's step-down procedure, the t tests
and the TOSTs separately. Only ptbench's own statistics (`ptbench.results.stats`, numpy only)
are used, so the report needs nothing the harness does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ptbench.results.stats import ALPHA, Equivalence, Interval, TTest, corrected_intervals, holm, paired_to_baseline, t_test, tost_test, welch

MARGIN = 0.01  # the TOST margin: +-1 pp, about 3 test images on the digits
FRACTION_STEP = 0.25  # filter-fraction slopes are per 25% of the filters inherited
TIE = 1e-12  # a per-seed value within this of zero is zero (floating-point residue, not a test image)


# --------------------------------------------------------------------------- one tested quantity


@dataclass
class Tested:
    """One quantity's per-seed values, its t test against 0 and its TOST at +-MARGIN, with the
    Holm-adjusted p-values and the Holm step-down interval its family fills in (`correct`)."""

    values: pd.Series  # indexed by seed
    test: TTest
    tost: Equivalence
    p_holm: float = math.nan
    tost_holm: float = math.nan
    holm_interval: Interval | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, values: pd.Series, **info: Any) -> "Tested":
        values = values.dropna()
        test = t_test(values.to_numpy())
        return cls(values, test, tost_test(test, MARGIN), info=dict(info))

    @property
    def n(self) -> int:
        return self.test.n

    @property
    def mean(self) -> float:
        return self.test.mean

    @property
    def below(self) -> int:
        """Seeds whose value is below zero (below scratch, for a cell). A slope or an average
        that is zero in exact arithmetic can come out as -1e-17: below -TIE only counts."""
        return int((self.values < -TIE).sum())

    @property
    def p(self) -> float:
        return self.test.p

    def interval(self, level: float = 0.95) -> Interval:
        return self.test.interval(level)

    @property
    def significant(self) -> bool:
        """Holm over the family rejects a zero mean."""
        return self.p_holm < ALPHA

    @property
    def nominal(self) -> bool:
        """The uncorrected test rejects a zero mean."""
        return self.p < ALPHA

    @property
    def equivalent(self) -> bool:
        """Holm over the family's TOSTs shows the mean within +-MARGIN."""
        return self.tost_holm < ALPHA

    @property
    def up(self) -> bool:
        return self.significant and self.mean > 0

    @property
    def down(self) -> bool:
        return self.significant and self.mean < 0


def correct(items: Iterable[Tested]) -> list[Tested]:
    """Fill in one family's Holm-adjusted p-values (t tests and TOSTs separately) and the Holm
    step-down intervals (at the level Holm's step judged each test; they exclude zero exactly
    when Holm rejects)."""
    items = list(items)
    if not items:
        return items
    intervals, adjusted, _ = corrected_intervals([t.test for t in items])
    for item, interval, ph, eh in zip(items, intervals, adjusted, holm([t.tost.p for t in items])):
        item.p_holm, item.tost_holm, item.holm_interval = float(ph), float(eh), interval
    return items


# --------------------------------------------------------------------------- the runs


def prepare(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The suite's ok runs with `delta` (target accuracy minus the baseline's, same task and
    seed) and the strategy parameters the tables are keyed by: family, layers, freeze, fraction."""
    ok = runs[runs["status"] == "ok"].reset_index(drop=True)
    if ok.empty:
        return ok.assign(delta=[], family=[], layers=[], freeze=[], fraction=[], n_target=[])
    ok = paired_to_baseline(ok, baseline)
    params = list(ok["strategy_params"])
    ok["family"] = ok["strategy"].str.split("[", n=1).str[0]
    ok["layers"] = [p.get("layers", 1) if isinstance(p, dict) else None for p in params]
    ok["freeze"] = [p.get("freeze") if isinstance(p, dict) else None for p in params]
    ok["fraction"] = [p.get("fraction") if isinstance(p, dict) else None for p in params]
    ok["n_target"] = [p.get("n_target") if isinstance(p, dict) else None for p in ok["task_params"]]
    return ok


def deltas(df: pd.DataFrame, task: str, family: str, **params: Any) -> pd.Series:
    """Per-seed paired differences of one strategy instance on one task, indexed by seed."""
    rows = df[(df["task"] == task) & (df["family"] == family)]
    for key, value in params.items():
        rows = rows[rows[key] == value]
    return rows.set_index("seed")["delta"].sort_index().dropna()


def seeds_matrix(series: list[pd.Series]) -> pd.DataFrame:
    """Seeds x levels, only the seeds every level has (a per-seed slope needs all of them)."""
    return pd.concat(series, axis=1, join="inner").dropna()


def per_seed_slope(matrix: pd.DataFrame, x: np.ndarray) -> pd.Series:
    """The least-squares slope of each seed's values (a row) over x."""
    if matrix.empty:
        return pd.Series(dtype=float)
    return pd.Series(np.polyfit(x, matrix.to_numpy().T, 1)[0], index=matrix.index)


@dataclass
class Difference:
    """An unpaired difference (Welch): mean(b) - mean(a) for two different tasks' runs."""

    test: TTest

    @classmethod
    def of(cls, a: pd.Series, b: pd.Series) -> "Difference":
        return cls(welch(a.to_numpy(), b.to_numpy()))

    @property
    def p(self) -> float:
        return self.test.p

    def interval(self) -> Interval:
        return self.test.interval()


# --------------------------------------------------------------------------- what is tested


@dataclass(frozen=True)
class TaskInfo:
    """One task of the suite and the names the page gives it. `role` is "few" (the digits
    task with the fewest target images), "many" (the most), "digits" (any other) or "cross"
    (textures -> digits): the prose compares tasks by role."""

    name: str
    kind: str  # "digits" or "textures"
    role: str
    params: dict

    @property
    def n_target(self) -> int:
        return int(self.params.get("n_target") or 0)

    @property
    def heading(self) -> str:
        if self.kind == "textures":
            return f"textures (brick / grass / gravel patches) -> all ten digits, {self.n_target} per class"
        return f"digits {self.params.get('source_classes', '0-4')} -> {self.params.get('target_classes', '5-9')}, {self.n_target} target images per class"

    @property
    def row_label(self) -> str:
        """'digits 10/class' or 'textures -> digits' (a row of the trend tables)."""
        return "textures -> digits" if self.kind == "textures" else f"digits {self.n_target}/class"

    @property
    def column_label(self) -> str:
        """'digits, 10/class' or 'textures -> digits' (a column group of the filter table)."""
        return "textures -> digits" if self.kind == "textures" else f"digits, {self.n_target}/class"

    @property
    def short(self) -> str:
        """'10/class' or 'textures' (inside a parenthesis of the prose)."""
        return "textures" if self.kind == "textures" else f"{self.n_target}/class"

    @property
    def phrase(self) -> str:
        """'with 10 images per class' or 'across domains'."""
        return "across domains" if self.kind == "textures" else f"with {self.n_target} images per class"


def suite_tasks(df: pd.DataFrame) -> list[TaskInfo]:
    """The digits-split tasks (fewest target images first) then cross-domain, with roles."""
    first = df.drop_duplicates("task")
    digits = sorted(((r.task, r.task_params) for r in first.itertuples() if r.task.split("[", 1)[0] == "digits-split"),
                    key=lambda item: (item[1].get("n_target") or 0, item[0]))
    tasks = []
    for i, (name, params) in enumerate(digits):
        role = "few" if i == 0 else "many" if i == len(digits) - 1 else "digits"
        tasks.append(TaskInfo(name, "digits", role, dict(params)))
    tasks += [TaskInfo(r.task, "textures", "cross", dict(r.task_params)) for r in first.itertuples()
              if r.task.split("[", 1)[0] == "cross-domain"][:1]
    return tasks


@dataclass(frozen=True)
class Column:
    """A layer-transfer curve: AnB is `partial-layers` frozen, AnB+ fine-tuned; BnB / BnB+ is
    `selffer` (the first k layers of a model trained on the target task itself)."""

    label: str
    family: str
    freeze: bool
    title: str


COLUMNS = (
    Column("AnB", "partial-layers", True, "AnB (frozen)"),
    Column("AnB+", "partial-layers", False, "AnB+ (fine-tuned)"),
    Column("BnB", "selffer", True, "BnB (frozen)"),
    Column("BnB+", "selffer", False, "BnB+ (fine-tuned)"),
)
ANB, ANB_PLUS, BNB, BNB_PLUS = COLUMNS


@dataclass
class LayerTable:
    """One task's layer table: cells keyed by (column label, k), Holm over all of them."""

    task: TaskInfo
    columns: list[Column]
    depths: list[int]
    cells: dict[tuple[str, int], Tested]

    def cell(self, column: Column, k: int) -> Tested | None:
        return self.cells.get((column.label, k))

    def curve(self, column: Column) -> list[Tested]:
        return [self.cells[(column.label, k)] for k in self.depths if (column.label, k) in self.cells]


@dataclass
class Trend:
    """A per-seed slope over depth (or fraction) with its t test, and for depth the per-seed
    contrast of the deepest level minus the shallowest."""

    task: TaskInfo
    label: str  # a column label, or "frozen" / "fine-tuned" for a fraction trend
    slope: Tested
    contrast: Tested | None
    levels: list


@dataclass
class Analysis:
    """Everything the page shows, computed once from the runs."""

    tasks: list[TaskInfo]
    tables: list[LayerTable]
    filter_cells: dict[tuple[str, bool, float], Tested]
    fractions: list[float]
    depth_trends: list[Trend]
    fraction_trends: list[Trend]
    averages: list[Tested]
    gaps: dict[tuple[str, bool, int], Tested]
    drop_change: Difference | None
    facts: pd.DataFrame  # one row per task: seeds, n_test, scratch / source / train accuracies

    def role(self, role: str) -> TaskInfo | None:
        return _with_role(self.tasks, role)

    def table(self, task: TaskInfo | None) -> LayerTable | None:
        return next((t for t in self.tables if task is not None and t.task.name == task.name), None)

    def depth_trend(self, task: TaskInfo | None, column: Column) -> Trend | None:
        return next((t for t in self.depth_trends if task is not None and t.task.name == task.name and t.label == column.label), None)

    def average(self, task: TaskInfo | None, column: Column) -> Tested | None:
        return next((a for a in self.averages if task is not None and a.info["task"].name == task.name
                     and a.info["column"] == column.label), None)


# --------------------------------------------------------------------------- computing it


def layer_table(df: pd.DataFrame, task: TaskInfo) -> LayerTable | None:
    """The task's AnB / AnB+ / BnB / BnB+ cells over k, one Holm family."""
    rows = df[(df["task"] == task.name) & df["family"].isin({c.family for c in COLUMNS})]
    if rows.empty:
        return None
    depths = sorted(int(k) for k in rows["layers"].dropna().unique())
    columns = [c for c in COLUMNS if ((rows["family"] == c.family) & (rows["freeze"] == c.freeze)).any()]
    cells = {}
    for column in columns:
        for k in depths:
            values = deltas(df, task.name, column.family, freeze=column.freeze, layers=k)
            if len(values):
                cells[(column.label, k)] = Tested.of(values, task=task, column=column.label, k=k)
    if not cells:  # no paired difference (the baseline failed or is missing for this task)
        return None
    correct(cells.values())
    return LayerTable(task, columns, depths, cells)


def filter_cells(df: pd.DataFrame, tasks: list[TaskInfo]) -> tuple[dict[tuple[str, bool, float], Tested], list[float]]:
    """`partial-filters` cells keyed by (task, frozen, fraction), one Holm family over all."""
    pf = df[df["family"] == "partial-filters"]
    fractions = sorted(float(f) for f in pf["fraction"].dropna().unique())
    cells = {}
    for task in tasks:
        for freeze in (True, False):
            for fraction in fractions:
                values = deltas(df, task.name, "partial-filters", freeze=freeze, fraction=fraction)
                if len(values):
                    cells[(task.name, freeze, fraction)] = Tested.of(values, task=task, freeze=freeze, fraction=fraction)
    correct(cells.values())
    return cells, fractions


def depth_trends(df: pd.DataFrame, tables: list[LayerTable]) -> list[Trend]:
    """Per curve with three or more depths: the per-seed slope over k (pp per layer) and the
    deepest-minus-shallowest contrast; Holm over the curves, slopes and contrasts apart."""
    trends = []
    for table in tables:
        for column in table.columns:
            curve = table.curve(column)
            if len(curve) < 3:
                continue
            levels = [c.info["k"] for c in curve]
            matrix = seeds_matrix([c.values.rename(k) for c, k in zip(curve, levels)])
            slope = Tested.of(per_seed_slope(matrix, np.asarray(levels, dtype=float)), task=table.task, column=column.label)
            contrast = Tested.of(matrix[levels[-1]] - matrix[levels[0]], task=table.task, column=column.label)
            trends.append(Trend(table.task, column.label, slope, contrast, levels))
    correct([t.slope for t in trends])
    correct([t.contrast for t in trends])
    return trends


def fraction_trends(cells: dict, tasks: list[TaskInfo], fractions: list[float]) -> list[Trend]:
    """Per filter-table column: the per-seed slope over the fraction, per 25% of the filters;
    Holm over the columns."""
    trends = []
    for task in tasks:
        for freeze, mode in ((True, "frozen"), (False, "fine-tuned")):
            here = [f for f in fractions if (task.name, freeze, f) in cells]
            if len(here) < 3:
                continue
            matrix = seeds_matrix([cells[(task.name, freeze, f)].values.rename(f) for f in here])
            x = np.asarray(here, dtype=float) / FRACTION_STEP
            trends.append(Trend(task, mode, Tested.of(per_seed_slope(matrix, x), task=task, freeze=freeze), None, here))
    correct([t.slope for t in trends])
    return trends


AVERAGED = (ANB_PLUS, BNB, BNB_PLUS)  # frozen AnB changes with depth: its mean over k answers no question


def seed_averages(tables: list[LayerTable], order: list[TaskInfo]) -> list[Tested]:
    """Each seed's mean over k of its paired differences (one number per seed, since the depths
    share one scratch run per seed), per curve that should stay at scratch; Holm over them."""
    averages = []
    for column in AVERAGED:
        for task in order:
            table = next((t for t in tables if t.task.name == task.name), None)
            curve = table.curve(column) if table is not None else []
            if len(curve) < 2:
                continue
            matrix = seeds_matrix([c.values.rename(c.info["k"]) for c in curve])
            averages.append(Tested.of(matrix.mean(axis=1), task=task, column=column.label))
    return correct(averages)


def anb_bnb_gaps(tables: list[LayerTable]) -> dict[tuple[str, bool, int], Tested]:
    """AnB − BnB and AnB+ − BnB+ per seed (the cost of co-adaptation plus specificity minus that
    of co-adaptation alone), keyed by (task, frozen, k); one Holm family over all of them."""
    gaps = {}
    for table in tables:
        for a, b in ((ANB, BNB), (ANB_PLUS, BNB_PLUS)):
            for k in table.depths:
                ca, cb = table.cell(a, k), table.cell(b, k)
                if ca is None or cb is None:
                    continue
                both = seeds_matrix([ca.values.rename("a"), cb.values.rename("b")])
                gaps[(table.task.name, a.freeze, k)] = Tested.of(both["a"] - both["b"], task=table.task, k=k)
    correct(gaps.values())
    return gaps


def drop_change(tables: list[LayerTable], few: TaskInfo | None, many: TaskInfo | None) -> Difference | None:
    """Frozen AnB at the deepest k: many target images minus few (different runs: Welch)."""
    by_name = {t.task.name: t for t in tables}
    a, b = (by_name.get(task.name) if task is not None else None for task in (few, many))
    if a is None or b is None or not a.depths or a.depths[-1] != b.depths[-1]:
        return None
    ca, cb = a.cell(ANB, a.depths[-1]), b.cell(ANB, b.depths[-1])
    return Difference.of(ca.values, cb.values) if ca is not None and cb is not None else None


def inferred_test_images(accuracies: pd.Series, largest: int = 100_000) -> int | None:
    """The number of test images, inferred as the smallest n for which every accuracy is a
    whole number of images out of n (None when none up to `largest` fits)."""
    acc = accuracies.dropna().to_numpy(dtype=float)
    if not len(acc):
        return None
    for n in range(1, largest + 1):
        scaled = acc * n
        if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6):
            return n
    return None


def task_facts(df: pd.DataFrame, tasks: list[TaskInfo], baseline: str) -> pd.DataFrame:
    """Per task: seeds, test images, scratch accuracy, source accuracy, and the share of runs
    that end at 100% training accuracy."""
    rows = []
    for task in tasks:
        runs = df[df["task"] == task.name]
        scratch = runs[runs["family"] == baseline.split("[", 1)[0]]
        rows.append({"task": task.name, "seeds": int(runs["seed"].nunique()), "n_test": inferred_test_images(runs["target_acc"]),
                     "scratch_acc": float(scratch["target_acc"].mean()) if len(scratch) else math.nan,
                     "source_acc": float(runs["source_acc"].mean()),
                     "train_full": float((runs["target_train_acc"] >= 1.0).mean()), "runs": len(runs)})
    return pd.DataFrame(rows).set_index("task") if rows else pd.DataFrame()


def _with_role(tasks: list[TaskInfo], role: str) -> TaskInfo | None:
    return next((t for t in tasks if t.role == role), None)


def analyse(df: pd.DataFrame, baseline: str) -> Analysis:
    """Every table, trend, average and contrast of the page, each family Holm-corrected."""
    tasks = suite_tasks(df)
    tables = [t for t in (layer_table(df, task) for task in tasks) if t is not None]
    cells, fractions = filter_cells(df, tasks)
    cross_first = sorted(tasks, key=lambda t: t.role != "cross")
    return Analysis(
        tasks=tasks, tables=tables, filter_cells=cells, fractions=fractions,
        depth_trends=depth_trends(df, tables), fraction_trends=fraction_trends(cells, tasks, fractions),
        averages=seed_averages(tables, cross_first), gaps=anb_bnb_gaps(tables),
        drop_change=drop_change(tables, _with_role(tasks, "few"), _with_role(tasks, "many")),
        facts=task_facts(df, tasks, baseline),
    )
