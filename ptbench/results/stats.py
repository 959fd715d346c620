"""Confidence intervals, paired differences to the baseline, negative-transfer incidence, ranks.

Seeds are the unit of replication: every interval here is over seeds. Differences to the
baseline are paired by seed (the harness gives both the same data and initialisation), which
removes the seed-to-seed variation both share and makes small effects visible.
"""

from __future__ import annotations

import functools
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


# =========================================================================================
# Tests that hold up: exact t and chi-square tails, multiple-testing corrections, equivalence
# (TOST), tie-aware incidence, a one-way random-effects test, and the two small models the
# paper report fits (binomial logistic regression, isotonic regression). numpy only, so that
# scipy and statsmodels stay out of the dependencies; tests/unit/test_stats_corrections.py
# holds every function to scipy / statsmodels where they have the same test.
# =========================================================================================

ALPHA = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    if math.isnan(t) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    return 1.0 - t_sf(t, df)


def _t_pdf(t: float, df: float) -> float:
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                    - (df + 1) / 2 * math.log1p(t * t / df))


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t (Newton's method on the exact tail from the normal
    quantile, bisection where Newton leaves the bracket; |error| < 1e-10)."""
    if not 0 < q < 1 or df <= 0:
        return math.nan
    if q < 0.5:
        return -t_quantile(1 - q, df)
    if q == 0.5:
        return 0.0
    tail = 1 - q
    x = _normal_quantile(q)
    for _ in range(50):
        f = t_sf(x, df) - tail
        step = f / _t_pdf(x, df)
        nxt = x + step
        if not math.isfinite(nxt) or nxt <= 0:
            break
        if abs(step) < 1e-12 * max(1.0, abs(nxt)):
            return nxt
        x = nxt
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _normal_quantile(q: float) -> float:
    """Acklam's rational approximation of the normal quantile (|relative error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if q < 0.02425:
        r = math.sqrt(-2 * math.log(q))
        return (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1)
    if q > 1 - 0.02425:
        return -_normal_quantile(1 - q)
    r = q - 0.5
    t = r * r
    return (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * r / (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1)


def _gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    if x <= 0:
        return 1.0
    if x < a + 1:  # series for P
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    tiny = 1e-300  # continued fraction for Q (Lentz)
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square with df degrees of freedom."""
    if math.isnan(x) or df <= 0:
        return math.nan
    return _gamma_q(df / 2.0, x / 2.0) if x > 0 else 1.0


def f_sf(x: float, df1: float, df2: float) -> float:
    """P(F > x) for Fisher's F(df1, df2)."""
    if math.isnan(x) or df1 <= 0 or df2 <= 0:
        return math.nan
    if x <= 0:
        return 1.0
    return betainc(df2 / 2.0, df1 / 2.0, df2 / (df2 + df1 * x))


@dataclass(frozen=True)
class TTest:
    """A one-sample t test of the mean of `n` values (paired differences, usually) against 0."""

    mean: float
    se: float
    n: int
    dof: float | None = None  # degrees of freedom when not n - 1 (Welch's test)

    @property
    def df(self) -> float:
        return self.n - 1 if self.dof is None else self.dof

    @property
    def t(self) -> float:
        if self.n < 2:
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean == 0 else math.copysign(math.inf, self.mean)
        return self.mean / self.se

    @property
    def p(self) -> float:
        """Two-sided p-value (1 when every value is equal and zero, NaN below two values)."""
        if self.n < 2:
            return math.nan
        return min(1.0, 2.0 * t_sf(abs(self.t), self.df))

    def p_greater(self) -> float:
        """One-sided p-value for mean > 0."""
        return math.nan if self.n < 2 else t_sf(self.t, self.df)

    def interval(self, level: float = 0.95) -> Interval:
        """The two-sided t interval at `level` (0.95: the usual one)."""
        if self.n < 2:
            return Interval(self.mean, self.mean, self.mean, self.n)
        half = t_quantile(0.5 + level / 2.0, self.df) * self.se
        return Interval(self.mean, self.mean - half, self.mean + half, self.n)


def t_test(values) -> TTest:
    """The t test of the mean of `values` (NaN dropped) against 0; for paired data pass the
    differences (scipy.stats.ttest_1samp / ttest_rel)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return TTest(math.nan, math.nan, 0)
    se = float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return TTest(float(x.mean()), se, n)


def welch(a, b) -> TTest:
    """Welch's unequal-variance t test of mean(b) - mean(a) (scipy.stats.ttest_ind with
    equal_var=False), for groups that cannot be paired; n is the smaller group's size."""
    x = np.asarray([v for v in a if v is not None and not math.isnan(v)], dtype=float)
    y = np.asarray([v for v in b if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2 or len(y) < 2:
        return TTest(math.nan, math.nan, 0)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if va + vb > 0 else float(len(x) + len(y) - 2)
    return TTest(float(y.mean() - x.mean()), se, min(len(x), len(y)), dof)


def tost_test(test: TTest, margin: float) -> "Equivalence":
    """TOST on an already computed t test (a paired or a Welch difference)."""
    if test.n < 2:
        return Equivalence(test, margin, math.nan, math.nan)
    if test.se == 0:
        inside = abs(test.mean) < margin
        return Equivalence(test, margin, 0.0 if inside else 1.0, 0.0 if inside else 1.0)
    return Equivalence(test, margin, t_sf((test.mean + margin) / test.se, test.df), t_cdf((test.mean - margin) / test.se, test.df))


@dataclass(frozen=True)
class Equivalence:
    """A TOST (two one-sided t tests) that the mean lies within (-margin, +margin): equivalence
    is shown when `p` (the larger one-sided p-value) is below alpha, which is the same as the
    (1 - 2 alpha) t interval lying inside the margins."""

    test: TTest
    margin: float
    p_low: float
    p_high: float

    @property
    def p(self) -> float:
        return max(self.p_low, self.p_high)

    def shown(self, alpha: float = ALPHA) -> bool:
        return self.test.n >= 2 and self.p < alpha


def tost(values, margin: float) -> Equivalence:
    """TOST for a mean within +-margin (statsmodels.stats.weightstats.ttost_paired on the
    differences): H0 mean <= -margin and H0 mean >= +margin, each one-sided at alpha."""
    # H0 mean <= -margin (p_low) and H0 mean >= +margin (p_high)
    return tost_test(t_test(values), margin)


def _clean_p(pvalues) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    return p, ~np.isnan(p)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error; statsmodels multipletests
    method='holm'). NaN p-values are left out of the family and stay NaN."""
    p, ok = _clean_p(pvalues)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * q[order])
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    out[ok] = result
    return out


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg q-values (false discovery rate; statsmodels method='fdr_bh')."""
    p, ok = _clean_p(pvalues)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    ranked = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    out[ok] = result
    return out


CORRECTIONS = {"holm": holm, "fdr_bh": benjamini_hochberg}


def adjust(pvalues, method: str = "holm") -> np.ndarray:
    """Adjusted p-values by `method` ('holm' or 'fdr_bh', statsmodels' names)."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    return CORRECTIONS[method](pvalues)


def holm_levels(pvalues, alpha: float = ALPHA) -> np.ndarray:
    """The two-sided level each test is judged at in Holm's step-down procedure: the k-th
    smallest p-value of m is compared with alpha / (m - k + 1) while every smaller one was
    rejected; the tests after the first acceptance all get the level of that step. An
    interval at 1 - level then excludes 0 exactly when Holm rejects (the step-down
    intervals that go with the test; NaN p-values get NaN)."""
    p, ok = _clean_p(pvalues)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    levels = np.empty(m)
    stopped = None
    for rank, index in enumerate(order):
        level = alpha / (m - rank)
        if stopped is None and q[index] > level:
            stopped = level
        levels[index] = level if stopped is None else stopped
    out[ok] = levels
    return out


def corrected_intervals(tests: list[TTest], alpha: float = ALPHA) -> tuple[list[Interval], np.ndarray, np.ndarray]:
    """(Holm step-down intervals, Holm-adjusted p, BH q) for the t tests of one family."""
    pvalues = [t.p for t in tests]
    levels = holm_levels(pvalues, alpha)
    intervals = [t.interval(1 - lv) if not math.isnan(lv) else t.interval() for t, lv in zip(tests, levels)]
    return intervals, holm(pvalues), benjamini_hochberg(pvalues)


@dataclass(frozen=True)
class Incidence:
    """Seeds where the strategy lost to / tied with / beat the baseline, a difference of at
    most `margin` test examples counting as a tie."""

    below: int
    ties: int
    above: int
    margin: int

    @property
    def n(self) -> int:
        return self.below + self.ties + self.above

    @property
    def negative(self) -> Interval:
        """Wilson interval of the share of seeds below the baseline."""
        return wilson(self.below, self.n)

    def fmt(self) -> str:
        return f"{self.below}/{self.ties}/{self.above}" if self.n else "n/a"


def incidence(deltas, n_test: int, margin: int = 1) -> Incidence:
    """Negative-transfer incidence with ties: a seed is below (above) the baseline when its
    accuracy difference is more than `margin` test examples, i.e. |delta| * n_test > margin."""
    x = np.asarray([v for v in deltas if v is not None and not math.isnan(v)], dtype=float)
    examples = np.rint(x * n_test)
    return Incidence(int((examples < -margin).sum()), int((np.abs(examples) <= margin).sum()), int((examples > margin).sum()), margin)


@dataclass(frozen=True)
class OneWay:
    """One-way random-effects analysis of groups (cells) of replicate values (seeds)."""

    f: float
    p: float
    df_between: int
    df_within: int
    between_sd: float  # method-of-moments estimate of the SD of the group means' true values
    within_sd: float

    @property
    def icc(self) -> float:
        total = self.between_sd**2 + self.within_sd**2
        return self.between_sd**2 / total if total > 0 else math.nan


def one_way(groups: list) -> OneWay:
    """F test that every group has the same mean (scipy.stats.f_oneway) and the random-effects
    variance components (between-group SD from (MSB - MSW) / n0, floored at 0)."""
    arrays = [np.asarray([v for v in g if not math.isnan(v)], dtype=float) for g in groups]
    arrays = [a for a in arrays if len(a)]
    k = len(arrays)
    sizes = np.array([len(a) for a in arrays], dtype=float)
    total_n = sizes.sum()
    if k < 2 or total_n - k < 1:
        return OneWay(math.nan, math.nan, k - 1, int(total_n - k), math.nan, math.nan)
    grand = np.concatenate(arrays).mean()
    ssb = float(sum(len(a) * (a.mean() - grand) ** 2 for a in arrays))
    ssw = float(sum(((a - a.mean()) ** 2).sum() for a in arrays))
    dfb, dfw = k - 1, int(total_n - k)
    msb, msw = ssb / dfb, ssw / dfw
    if msw == 0:
        f = math.inf if msb > 0 else math.nan
        p = 0.0 if msb > 0 else math.nan
    else:
        f = msb / msw
        p = f_sf(f, dfb, dfw)
    n0 = (total_n - (sizes**2).sum() / total_n) / dfb
    between = math.sqrt(max((msb - msw) / n0, 0.0))
    return OneWay(f, p, dfb, dfw, between, math.sqrt(msw))


def derived_rng(seed: int, role: str) -> np.random.Generator:
    """A numpy generator derived from (seed, role), like every other draw in ptbench."""
    from ptbench.rng import derive_seed

    return np.random.default_rng(derive_seed(seed, role))


# ----------------------------------------------------------------------------- small models


@dataclass(frozen=True)
class LogisticFit:
    """A binomial logistic regression: P(success) = 1 / (1 + exp(-X @ coef))."""

    coef: np.ndarray
    cov: np.ndarray
    loglik: float
    converged: bool

    def predict(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(X, dtype=float) @ self.coef, -700.0, 700.0)))


def _binomial_loglik(eta: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    # k log p + (n - k) log(1 - p), written stably with log p = -log1p(exp(-eta))
    return float(np.sum(-k * np.logaddexp(0.0, -eta) - (n - k) * np.logaddexp(0.0, eta)))


def logistic_fit(X, successes, trials, max_iter: int = 100, tol: float = 1e-10) -> LogisticFit:
    """Maximum-likelihood binomial logistic regression by Newton's method (IRLS) with step
    halving; X [rows, features] should carry its own intercept column. Rows are groups of
    `trials` Bernoulli outcomes with `successes` ones (statsmodels GLM(Binomial) on the same
    rows gives the same coefficients and log-likelihood). A fit that separates the data
    stops at max_iter with converged False and large coefficients."""
    X = np.asarray(X, dtype=float)
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    beta = np.zeros(X.shape[1])
    ll = _binomial_loglik(X @ beta, k, n)
    converged = False
    for _ in range(max_iter):
        eta = np.clip(X @ beta, -700.0, 700.0)
        p = 1.0 / (1.0 + np.exp(-eta))
        w = n * p * (1 - p)
        grad = X.T @ (k - n * p)
        hess = (X * w[:, None]).T @ X
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(len(beta)), grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while True:
            candidate = beta + t * step
            new_ll = _binomial_loglik(X @ candidate, k, n)
            if new_ll >= ll - 1e-12 or t < 1e-8:
                break
            t /= 2
        improvement = new_ll - ll
        beta, ll = candidate, new_ll
        if abs(improvement) < tol * (1 + abs(ll)):
            converged = True
            break
    p = 1.0 / (1.0 + np.exp(-np.clip(X @ beta, -700.0, 700.0)))
    hess = (X * (n * p * (1 - p))[:, None]).T @ X
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        cov = np.full((len(beta), len(beta)), np.nan)
    return LogisticFit(beta, cov, ll, converged)


def isotonic(x, y, weights=None, increasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weighted isotonic regression of y on x by pool-adjacent-violators (sklearn's
    IsotonicRegression): returns (the distinct sorted x, the fitted step values there).
    Equal x are pooled first (their weighted mean), so the fit is a function of x."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    ux, inverse = np.unique(x, return_inverse=True)
    wsum = np.bincount(inverse, weights=w)
    ymean = np.bincount(inverse, weights=w * y) / wsum
    if not increasing:
        ymean = -ymean
    values, sizes, counts = [], [], []
    for value, weight in zip(ymean, wsum):
        values.append(value)
        sizes.append(weight)
        counts.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            v2, w2, c2 = values.pop(), sizes.pop(), counts.pop()
            v1, w1, c1 = values.pop(), sizes.pop(), counts.pop()
            values.append((v1 * w1 + v2 * w2) / (w1 + w2))
            sizes.append(w1 + w2)
            counts.append(c1 + c2)
    fitted = np.repeat(values, counts)
    return ux, (fitted if increasing else -fitted)


def isotonic_predict(knots_x: np.ndarray, knots_y: np.ndarray, x) -> np.ndarray:
    """The isotonic fit at new x: linear between knots, flat beyond the ends (sklearn's
    out_of_bounds='clip')."""
    return np.interp(np.asarray(x, dtype=float), knots_x, knots_y)
