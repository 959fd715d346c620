"""Confidence intervals, paired differences to the baseline, negative-transfer incidence, ranks.

Seeds are the unit of replication: every interval here is over seeds. Differences to the
baseline are paired by seed (the harness gives both the same data and initialisation), which
removes the seed-to-seed variation both share and makes small effects visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Two-sided 95% Student-t quantiles, df = 1..30; beyond that a Cornish-Fisher expansion
# around the normal quantile is accurate to 1e-4 (and keeps scipy out of the dependencies).
_T975 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]
Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def below_zero(self) -> bool:
        """The whole interval is below 0: a difference that is negative beyond seed noise."""
        return self.n >= 2 and self.high < 0

    @property
    def above_zero(self) -> bool:
        return self.n >= 2 and self.low > 0

    def fmt(self, scale: float = 100.0, decimals: int = 1, signed: bool = False) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        sign = "+" if signed else ""

        def show(value: float) -> str:
            return f"{round(value * scale, decimals) + 0.0:{sign}.{decimals}f}"  # + 0.0: no "-0.0"

        if self.n < 2:
            return show(self.mean)
        return f"{show(self.mean)} [{show(self.low)}, {show(self.high)}]"


def mean_ci(values, bounds: tuple[float, float] | None = None) -> Interval:
    """Mean and 95% t interval over seeds; `bounds` clips the interval to the metric's range
    (an accuracy interval reaching past 100% says nothing the reader can use)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)
    half = t_quantile_975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, n)


def wilson(k: int, n: int) -> Interval:
    """Wilson score interval for a proportion: sane at 0/n and n/n, unlike the normal one."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    p = k / n
    z = Z975
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends at 0/n and n/n, not 1 - 1e-16
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, n)


def paired_to_baseline(runs: pd.DataFrame, baseline: str, metric: str = "target_acc") -> pd.DataFrame:
    """Add `baseline_acc` and `delta` (metric minus the baseline's, same task and seed).

    `runs` holds ok runs with columns task, strategy, seed and the metric. The baseline is
    a strategy instance name (`partial-filters[fraction=0.5,freeze=False]`) or a bare name
    (`scratch` matches `scratch` whatever its parameters), and a run without a baseline run
    of the same task and seed gets NaN.
    """
    is_base = (runs["strategy"] == baseline) | (runs["strategy"].str.split("[", n=1).str[0] == baseline)
    base = runs[is_base][["task", "seed", metric]].rename(columns={metric: "baseline_acc"})
    base = base.drop_duplicates(["task", "seed"])
    merged = runs.merge(base, on=["task", "seed"], how="left")
    merged["delta"] = merged[metric] - merged["baseline_acc"]
    return merged


def summarize(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (task, strategy): accuracy, paired delta, incidence, seconds, seeds."""
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    paired = paired_to_baseline(ok, baseline)
    rows = []
    for (task, strategy), g in paired.groupby(["task", "strategy"], sort=False):
        deltas = g["delta"].dropna()
        worse = int((deltas < 0).sum())
        rows.append(
            {
                "task": task,
                "strategy": strategy,
                "acc": mean_ci(g["target_acc"], bounds=(0.0, 1.0)),
                "delta": mean_ci(deltas),
                "negative": wilson(worse, len(deltas)),
                "negative_k": worse,
                "source_acc": mean_ci(g["source_acc"], bounds=(0.0, 1.0)),
                "seconds": float(g["target_seconds"].mean()),
                "seeds": int(g["seed"].nunique()),
                # the plugin's name and parameters, for leaderboard sections that group
                # instances (a stored name may predate a parameter: take the stored values)
                "plugin": strategy.split("[", 1)[0],
                "params": dict(g["strategy_params"].iloc[0]) if "strategy_params" in g else {},
            }
        )
    table = pd.DataFrame(rows)
    table["acc_mean"] = table["acc"].map(lambda i: i.mean)
    table["rank"] = table.groupby("task")["acc_mean"].rank(ascending=False, method="average")
    return table


def overall_ranks(table: pd.DataFrame) -> pd.DataFrame:
    """Mean rank over tasks (1 is best), with how many tasks each strategy ran on.

    A mean over fewer tasks is not comparable with a mean over all of them, so `complete`
    marks the strategies present on every task of the table; they sort first, the others
    after them (each with its task count)."""
    if table.empty:
        return pd.DataFrame(columns=["strategy", "mean_rank", "tasks", "complete"])
    out = table.groupby("strategy").agg(mean_rank=("rank", "mean"), tasks=("task", "nunique")).reset_index()
    out["complete"] = out["tasks"] == table["task"].nunique()
    return out.sort_values(["complete", "mean_rank", "strategy"], ascending=[False, True, True]).reset_index(drop=True)


def paired_deltas(a: pd.DataFrame, b: pd.DataFrame, on: list[str], metric: str = "target_acc") -> pd.DataFrame:
    """Pair the rows of `a` and `b` that agree on the columns `on` (say task, strategy and
    seed between two stores, or task and seed between two strategies of one store).

    Returns the pairs with `a`, `b` and `delta` = b - a; rows without a partner are dropped,
    since an unpaired run says nothing about the difference. Duplicate keys are an error:
    a pair must be one run against one run.
    """
    for name, df in (("first", a), ("second", b)):
        dupes = df.duplicated(on)
        if dupes.any():
            first = df[dupes].iloc[0]
            raise ValueError(f"the {name} set has two runs for {dict((k, first[k]) for k in on)}")
    left = a[on + [metric]].rename(columns={metric: "a"})
    right = b[on + [metric]].rename(columns={metric: "b"})
    merged = left.merge(right, on=on, how="inner")
    merged = merged[merged["a"].notna() & merged["b"].notna()]
    merged["delta"] = merged["b"] - merged["a"]
    return merged.reset_index(drop=True)
