"""The paper suite's tests, as data: per-cell gains with Holm / BH over each figure, paired
contrasts for the directional claims, iso-scalar families, finite-size scaling and the
mechanism controls. `reports/paper.py` renders what this module computes.

Conventions. A gain (Δ) is a run's target accuracy minus scratch's, same task and seed.
Source-side factors (n_source, source noise, |v_1|, the fraction) leave the target's data and
the fresh filters bit-identical seed by seed, so contrasts along them are exact paired
differences; along |u| with the target held fixed, the target is equal in law only, and the
seed pairing is kept because it is valid (and it still removes the shared label and noise
draws). Every family of tests is corrected by Holm's step-down procedure (the decisions and
the intervals quoted with them: an interval at the level its Holm step used); BH q-values are
shown next to it. "No effect" is only ever said after a TOST with the stated margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ptbench.results.stats import (
    ALPHA, Equivalence, Incidence, Interval, TTest, corrected_intervals, f_sf, holm, incidence, one_way, t_test,
    tost, tost_test, welch,
)

MARGIN_GAIN = 0.02  # TOST margin for a gain or a difference of gains: 2 pp (40 of 2000 test examples)
MARGIN_SCRATCH = 0.01  # TOST margin for scratch accuracies that should be equal: 1 pp
TIE_EXAMPLES = 1  # a difference of at most one test example is a tie
MODES = ((False, "fine-tuned"), (True, "frozen"))
NAMES = {"p_shared": "|u|", "p_n_source": "n_source", "p_source_noise": "σ_p1", "p_specific": "|v₁|",
         "p_n_target": "n_target", "p_target_noise": "σ_p2", "p_label_flip": "label flip", "p_overlap": "overlap",
         "p_d": "d", "fraction": "α", "p_target_signal": "|μ₂|"}


def num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def pp(i: Interval, decimals: int = 1) -> str:
    """'+8.4 pp [6.1, 10.7]' from an interval in accuracy units."""
    return i.fmt(signed=True, decimals=decimals).replace(" [", " pp [", 1) if i.n >= 2 else i.fmt(signed=True) + " pp"


def p_text(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


# --------------------------------------------------------------------------- tested things


@dataclass
class Tested:
    """One t test (a cell's gain, or a contrast) with its family's corrections filled in."""

    test: TTest
    info: dict[str, Any] = field(default_factory=dict)
    interval: Interval | None = None  # Holm step-down interval
    p_holm: float = math.nan
    q_bh: float = math.nan
    inc: Incidence | None = None

    @property
    def up(self) -> bool:
        return self.p_holm < ALPHA and self.test.mean > 0

    @property
    def down(self) -> bool:
        return self.p_holm < ALPHA and self.test.mean < 0

    @property
    def raw(self) -> Interval:
        return self.test.interval()


def correct(items: list[Tested]) -> list[Tested]:
    """Holm and BH over `items` (one figure or one claim), in place."""
    if not items:
        return items
    intervals, adjusted, q = corrected_intervals([t.test for t in items])
    for t, i, p, qq in zip(items, intervals, adjusted, q):
        t.interval, t.p_holm, t.q_bh = i, float(p), float(qq)
    return items


def gain_cell(rows: pd.DataFrame, **info: Any) -> Tested:
    deltas = rows["delta"].dropna()
    n_test = int(rows["p_n_test"].iloc[0]) if "p_n_test" in rows and len(rows) else 2000
    return Tested(t_test(deltas), info, inc=incidence(deltas, n_test, TIE_EXAMPLES))


def cell_verdict(t: Tested) -> str:
    """'+' / '−' (Holm-significant), '0' (TOST within the margin) or '?' (neither)."""
    if t.up:
        return "+"
    if t.down:
        return "−"
    return "0" if tost_test(t.test, MARGIN_GAIN).shown() else "?"


# --------------------------------------------------------------------------- rows


def transfer_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Untraced partial-filters runs at a fraction above 0 (the paper's transfer)."""
    return df[(df["family"] == "partial-filters") & ~df["traced"] & (df["fraction"] > 0)]


def task_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("p_") and c != "p_trace"]


def _key(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
    """A group number per row: rows that agree on every column of `cols` (None/NaN equal)."""
    if not cols or frame.empty:
        return pd.Series(0, index=frame.index)
    keyed = frame[cols].astype(object).where(frame[cols].notna(), "∅").astype(str)
    return keyed.groupby(cols, sort=False).ngroup()


def strategy_text(freeze: Any, fraction: float) -> str:
    return f"α={num(fraction)} {'frozen' if freeze else 'fine-tuned'}"


# --------------------------------------------------------------------------- directional claims


@dataclass
class Claim:
    key: str
    text: str  # the paper's claim, as the report states it
    axis: str  # the column varied
    sign: int  # +1: the gain should grow with the axis; -1: it should shrink
    ends: list[Tested]  # lowest against highest level of each group (the primary test)
    steps: list[Tested] = field(default_factory=list)  # adjacent levels (where along the axis)

    @property
    def contrasts(self) -> list[Tested]:
        return self.ends

    @property
    def supported(self) -> list[Tested]:
        return [c for c in self.ends if c.up]

    @property
    def reversed(self) -> list[Tested]:
        return [c for c in self.ends if c.down]

    @property
    def steps_supported(self) -> list[Tested]:
        return [c for c in self.steps if c.up]

    @property
    def steps_reversed(self) -> list[Tested]:
        return [c for c in self.steps if c.down]


def _contrasts(rows: pd.DataFrame, axis: str, sign: int, group_cols: list[str], ends: bool = False) -> list[Tested]:
    """Paired contrasts of the gain along `axis` within groups that hold everything else:
    adjacent levels, or (ends=True) the lowest against the highest level."""
    out = []
    keyed = rows.assign(_g=_key(rows, group_cols))
    keyed = keyed[keyed[axis].notna() & keyed["delta"].notna()]
    table = keyed.pivot_table(index=["_g", "seed"], columns=axis, values="delta", aggfunc="first")
    firsts = keyed.drop_duplicates("_g").set_index("_g")
    for gid, g in table.groupby(level=0, sort=False):
        present = [lv for lv in table.columns if g[lv].notna().sum() >= 2]
        levels = sorted(present)
        if len(levels) < 2:
            continue
        first = firsts.loc[gid]
        pairs = [(levels[0], levels[-1])] if ends else list(zip(levels[:-1], levels[1:]))
        for lo, hi in pairs:
            both = g[[lo, hi]].dropna()
            if len(both) < 2:
                continue
            diff = (both[hi] - both[lo]).to_numpy(dtype=float) * (1 if sign > 0 else -1)
            src, dst = (lo, hi) if sign > 0 else (hi, lo)
            out.append(Tested(t_test(diff), {"from": src, "to": dst, "row": first, "freeze": first["freeze"],
                                             "fraction": first["fraction"], "axis": axis}))
    return out


def directional_claims(df: pd.DataFrame) -> list[Claim]:
    rows = transfer_rows(df)
    cols = task_columns(rows)
    claims = []
    for key, text, axis, sign in (
        ("n_source", "more source data helps the target", "p_n_source", +1),
        ("source_noise", "less source noise helps the target", "p_source_noise", -1),
        ("fraction", "more inherited parameters help the target", "fraction", +1),
        ("shared", "a larger shared signal |u| helps the target (target held fixed)", "p_shared", +1),
    ):
        here = rows
        if axis == "p_shared":
            if "p_target_signal" not in rows:
                claims.append(Claim(key, text, axis, sign, []))
                continue
            here = rows[rows["p_target_signal"].notna()]
        if axis not in here:
            claims.append(Claim(key, text, axis, sign, []))
            continue
        group = [c for c in cols if c != axis] + ["freeze"] + (["strategy"] if axis != "fraction" else [])
        claims.append(Claim(key, text, axis, sign, correct(_contrasts(here, axis, sign, group, ends=True)),
                            correct(_contrasts(here, axis, sign, group))))
    return claims


def contrast_where(t: Tested, varying: list[str]) -> str:
    row = t.info["row"]
    parts = [f"{NAMES.get(c, c[2:])}={num(row[c])}" for c in varying if c != t.info["axis"] and c in row]
    parts.append(strategy_text(t.info["freeze"], t.info["fraction"]) if t.info["axis"] != "fraction" else
                 ("frozen" if t.info["freeze"] else "fine-tuned"))
    return ", ".join(parts)


def claim_varying(claim: Claim) -> list[str]:
    if not claim.contrasts:
        return []
    frame = pd.DataFrame([t.info["row"] for t in claim.contrasts])
    return [c for c in frame.columns if c.startswith("p_") and c != "p_trace" and frame[c].map(repr).nunique() > 1]


# --------------------------------------------------------------------------- families


TARGET_KEYS = ("p_target_signal", "p_target_specific", "p_n_target", "p_target_noise", "p_label_flip", "p_d",
               "p_overlap", "p_n_test", "p_m", "p_steps", "p_lr", "p_sigma0", "p_patches")


@dataclass
class FamilyCell:
    tested: Tested
    row: pd.Series
    scratch: pd.Series  # scratch accuracy per seed (index: seed)
    value: float


@dataclass
class Family:
    mode: str
    value: float  # the family's scalar (median of its cells)
    cells: list[FamilyCell]
    spread: float  # (max - min) / median of the scalar over its cells
    anova: Any
    gain_equal: bool  # every pair of cells within MARGIN_GAIN by TOST (intersection-union)
    scratch_equal: bool  # every cell's scratch within MARGIN_SCRATCH of the first cell's, by TOST
    scratch_range: tuple[float, float]
    other_values: dict[str, tuple[float, float]] = field(default_factory=dict)  # other scalars' range here

    @property
    def verdicts(self) -> list[str]:
        return [cell_verdict(c.tested) for c in self.cells]

    @property
    def sign(self) -> str:
        v = set(self.verdicts)
        if v == {"+"}:
            return "+"
        if v == {"−"}:
            return "−"
        if "+" in v and "−" in v:
            return "split"
        return "mixed"


def family_cells(df: pd.DataFrame, frozen: bool) -> pd.DataFrame:
    """The cells iso-scalar families are drawn from: transfer cells of one mode (frozen
    fraction 1 left out, as in the fits), with the target's parameters as a key."""
    rows = transfer_rows(df)
    rows = rows[(rows["freeze"] == frozen) & rows["delta"].notna()]
    if frozen:
        rows = rows[rows["fraction"] < 1]
    return rows


def build_families(df: pd.DataFrame, frozen: bool, scalar: Callable[[pd.DataFrame], np.ndarray], mode: str,
                   tolerance: float, min_cells: int = 4, others: dict[str, Callable] | None = None) -> list[Family]:
    from .paper_scalars import factor_frame, families as cluster

    rows = family_cells(df, frozen)
    if rows.empty:
        return []
    cells = rows.drop_duplicates(["task", "strategy"]).copy()
    f = factor_frame(cells)
    cells["_value"] = scalar(f)
    tk = [c for c in TARGET_KEYS if c in cells]
    cells["_target"] = _key(cells, tk)
    labels = cluster(cells["_value"].to_numpy(dtype=float), cells["_target"].to_numpy(), tolerance)
    cells["_family"] = labels
    scratch = df[(df["family"] == "scratch") & ~df["traced"]]
    out = []
    for label, members in cells[cells["_family"] >= 0].groupby("_family"):
        if len(members) < min_cells:
            continue
        fam_cells = []
        for _, m in members.sort_values(["p_shared", "fraction", "p_n_source"]).iterrows():
            runs = rows[(rows["task"] == m["task"]) & (rows["strategy"] == m["strategy"])]
            sc = scratch[scratch["task"] == m["task"]].set_index("seed")["target_acc"]
            fam_cells.append(FamilyCell(gain_cell(runs), m, sc, float(m["_value"])))
        out.append(_family(mode, fam_cells, rows, others, f.loc[members.index]))
    return sorted(out, key=lambda fam: fam.value)


def _family(mode: str, cells: list[FamilyCell], rows: pd.DataFrame, others, factors: pd.DataFrame) -> Family:
    values = np.array([c.value for c in cells])
    gains = [rows[(rows["task"] == c.row["task"]) & (rows["strategy"] == c.row["strategy"])].set_index("seed")["delta"] for c in cells]
    anova = one_way([g.to_numpy(dtype=float) for g in gains])
    equal = True
    for i in range(len(gains)):
        for j in range(i + 1, len(gains)):
            common = gains[i].index.intersection(gains[j].index)
            if not tost((gains[j][common] - gains[i][common]).to_numpy(), MARGIN_GAIN).shown():
                equal = False
    scratch_equal = True
    ref = cells[0].scratch
    for c in cells[1:]:
        common = ref.index.intersection(c.scratch.index)
        if not tost((c.scratch[common] - ref[common]).to_numpy(), MARGIN_SCRATCH).shown():
            scratch_equal = False
    means = [float(c.scratch.mean()) for c in cells if len(c.scratch)]
    other_values = {}
    for name, fn in (others or {}).items():
        v = fn(factors)
        other_values[name] = (float(np.min(v)), float(np.max(v)))
    median = float(np.median(values))
    return Family(mode, median, cells, float((values.max() - values.min()) / median) if median else math.nan, anova, equal,
                  scratch_equal, (min(means), max(means)) if means else (math.nan, math.nan), other_values)


def correct_families(families: list[Family]) -> None:
    correct([c.tested for fam in families for c in fam.cells])


def one_threshold(families: list[Family]) -> tuple[bool, str]:
    """Whether one threshold on the scalar separates the signs: no family holds both a
    significantly positive and a significantly negative cell, some family holds a negative
    cell and some a positive one, and every family with a negative cell lies below every
    family with a positive cell (families are in order of the scalar)."""
    if not families:
        return False, "no families"
    verdicts = [set(fam.verdicts) for fam in families]
    if any("+" in v and "−" in v for v in verdicts):
        return False, "a family holds cells whose gains are significantly positive and cells significantly negative"
    negative = [i for i, v in enumerate(verdicts) if "−" in v]
    positive = [i for i, v in enumerate(verdicts) if "+" in v]
    if not negative or not positive:
        return False, "the families do not reach both signs, so no flip is seen"
    if max(negative) < min(positive):
        return True, (f"every family with a significantly negative cell (up to {families[max(negative)].value:.3g}) lies below every "
                      f"family with a significantly positive one (from {families[min(positive)].value:.3g})")
    return False, "a family with a significantly positive cell lies below one with a significantly negative cell"


# --------------------------------------------------------------------------- finite-size scaling


@dataclass
class ScalingPoint:
    d: float
    tested: Tested
    sd: float
    agree: float  # share of seeds with the cell's majority sign (ties excluded)


@dataclass
class ScalingLine:
    mode: str
    label: str  # the fixed regime (|u|=...)
    ratios: str  # n_source/d, n_target/d
    points: list[ScalingPoint]
    mean_test: Equivalence | None = None  # TOST: gain at the largest d minus at the smallest
    mean_diff: Tested | None = None
    spread_p: float = math.nan  # one-sided F test that the SD at the largest d is below the SD at the smallest
    spread_p_holm: float = math.nan


def scaling_lines(df: pd.DataFrame, fraction: float = 0.5) -> list[ScalingLine]:
    rows = transfer_rows(df)
    rows = rows[rows["fraction"] == fraction]
    if rows.empty or "p_d" not in rows:
        return []
    rows = rows.assign(_r1=(rows["p_n_source"] / rows["p_d"]).round(6), _r2=(rows["p_n_target"] / rows["p_d"]).round(6))
    cols = [c for c in task_columns(rows) if c not in ("p_d", "p_n_source", "p_n_target")] + ["_r1", "_r2", "freeze"]
    lines = []
    for _, g in rows.groupby(_key(rows, cols), sort=False):
        ds = sorted(g["p_d"].unique())
        if len(ds) < 3:
            continue
        first = g.iloc[0]
        mode = "frozen" if first["freeze"] else "fine-tuned"
        points = []
        for d in ds:
            here = g[g["p_d"] == d]
            t = gain_cell(here)
            inc = t.inc
            majority = max(inc.above, inc.below)
            points.append(ScalingPoint(float(d), t, float(here["delta"].std(ddof=1)), majority / (inc.above + inc.below) if inc.above + inc.below else math.nan))
        label = f"|u|={num(first['p_shared'])}"
        ratio = f"n_source = {num(first['_r1'])} d, n_target = {num(first['_r2'])} d"
        line = ScalingLine(mode, label, ratio, points)
        lo, hi = g[g["p_d"] == ds[0]]["delta"], g[g["p_d"] == ds[-1]]["delta"]
        diff = welch(lo.to_numpy(dtype=float), hi.to_numpy(dtype=float))
        line.mean_diff = Tested(diff, {"mode": mode, "label": label})
        line.mean_test = tost_test(diff, MARGIN_GAIN)
        va, vb = lo.var(ddof=1), hi.var(ddof=1)
        line.spread_p = f_sf(va / vb, len(lo) - 1, len(hi) - 1) if vb > 0 else math.nan
        lines.append(line)
    for mode in ("fine-tuned", "frozen"):
        here = [ln for ln in lines if ln.mode == mode]
        adjusted = holm([ln.spread_p for ln in here])
        for ln, p in zip(here, adjusted):
            ln.spread_p_holm = float(p)
    correct([ln.points[i].tested for ln in lines for i in range(len(ln.points))])
    correct([ln.mean_diff for ln in lines if ln.mean_diff is not None])
    return sorted(lines, key=lambda ln: (ln.mode != "fine-tuned", ln.label))


# --------------------------------------------------------------------------- mechanism controls


CONTROL_FAMILIES = ("random-filters", "project-out")


@dataclass
class ControlRegime:
    label: str
    row: pd.Series
    gains: dict[str, Tested]  # strategy display name -> gain over scratch
    contrasts: dict[str, Tested]  # name -> (control - partial-filters), paired by seed
    placebo: Equivalence | None
    diagnostics: dict[str, dict[str, float]]  # strategy -> mean diagnostics at the end of target training


def _control_name(strategy: str, params: dict) -> str:
    name = strategy.split("[", 1)[0]
    if name == "partial-filters":
        return f"inherited α={num(params['fraction'])}"
    if name == "random-filters":
        return f"random direction α={num(params['fraction'])}"
    if name == "project-out":
        return f"{params['direction']} removed α={num(params['fraction'])}"
    return strategy


def control_regimes(df: pd.DataFrame) -> list[ControlRegime]:
    rows = df[~df["traced"]]
    has = rows[rows["family"].isin(CONTROL_FAMILIES)]
    if has.empty:
        return []
    regimes = []
    all_gains, all_contrasts = [], []
    for task, controls in has.groupby("task", sort=False):
        fractions = sorted({float(p.get("fraction", 1.0)) for p in controls["strategy_params"]})
        here = rows[rows["task"] == task]
        first = here.iloc[0]
        gains: dict[str, Tested] = {}
        contrasts: dict[str, Tested] = {}
        diags: dict[str, dict[str, float]] = {}
        placebo = None
        for fraction in fractions:
            base = here[(here["family"] == "partial-filters") & (here["fraction"] == fraction) & (here["freeze"] == False)]  # noqa: E712
            pieces = [("partial-filters", base)] if len(base) else []
            for strategy, g in controls.groupby("strategy", sort=True):
                if float(g["strategy_params"].iloc[0].get("fraction", 1.0)) == fraction:
                    pieces.append((strategy, g))
            base_acc = base.set_index("seed")["target_acc"] if len(base) else None
            for strategy, g in pieces:
                name = _control_name(strategy, g["strategy_params"].iloc[0])
                gains[name] = gain_cell(g, regime=task, name=name)
                diags[name] = {k: float(np.nanmean([(d or {}).get("target", {}).get(k, math.nan) for d in g["diagnostics"]]))
                               for k in ("noise_inherited", "noise_fresh", "u_max_inherited", "v1_max_inherited")}
                if strategy == "partial-filters" or base_acc is None:
                    continue
                acc = g.set_index("seed")["target_acc"]
                common = acc.index.intersection(base_acc.index)
                diff = (acc[common] - base_acc[common]).to_numpy(dtype=float)
                contrasts[name] = Tested(t_test(diff), {"regime": task, "name": name})
                if g["strategy_params"].iloc[0].get("direction") == "v2":
                    placebo = tost(diff, MARGIN_GAIN)
        all_gains += list(gains.values())
        all_contrasts += list(contrasts.values())
        regimes.append(ControlRegime(f"|u|={num(first['p_shared'])}", first, gains, contrasts, placebo, diags))
    correct(all_gains)
    correct(all_contrasts)
    return sorted(regimes, key=lambda r: r.row["p_shared"])


# --------------------------------------------------------------------------- factor sweeps


FACTOR_AXES = ("p_specific", "p_n_target", "p_target_noise", "p_label_flip", "p_overlap")


@dataclass
class FactorSweep:
    axis: str
    levels: list[float]
    shared: list[float]
    cells: dict[tuple[Any, float, float], Tested]  # (freeze, |u|, level) -> gain
    scratch: dict[tuple[float, float], Interval]
    ends: dict[tuple[Any, float], Tested]  # (freeze, |u|) -> gain at the highest level minus at the lowest
    ends_tost: dict[tuple[Any, float], Equivalence]


def factor_sweeps(df: pd.DataFrame, fraction: float = 0.5) -> list[FactorSweep]:
    from ptbench.results.stats import mean_ci

    rows = transfer_rows(df)
    rows = rows[rows["fraction"] == fraction]
    scratch = df[(df["family"] == "scratch") & ~df["traced"]]
    out = []
    for axis in FACTOR_AXES:
        if axis not in rows:
            continue
        cols = [c for c in task_columns(rows) if c not in (axis, "p_shared")]
        keyed = rows.assign(_g=_key(rows, cols))
        best, best_levels = None, 0
        for value, g in keyed.groupby("_g"):
            n = g[axis].map(repr).nunique()
            if n > best_levels:
                best, best_levels = value, n
        if best_levels < 3:
            continue
        plane = keyed[keyed["_g"] == best]
        levels = sorted(plane[axis].unique())
        shared = sorted(plane["p_shared"].unique())
        cells, sc, ends, ends_tost = {}, {}, {}, {}
        for (freeze, u, level), g in plane.groupby(["freeze", "p_shared", axis]):
            cells[(freeze, u, level)] = gain_cell(g, axis=axis, level=level, u=u, freeze=freeze)
        for (u, level), g in plane.groupby(["p_shared", axis]):
            sc[(u, level)] = mean_ci(scratch[scratch["task"].isin(g["task"].unique())]["target_acc"])
        for (freeze, u), g in plane.groupby(["freeze", "p_shared"]):
            here = sorted(g[axis].unique())
            if len(here) < 2:
                continue
            lo = g[g[axis] == here[0]].set_index("seed")["delta"]
            hi = g[g[axis] == here[-1]].set_index("seed")["delta"]
            common = lo.index.intersection(hi.index)
            diff = (hi[common] - lo[common]).to_numpy(dtype=float)
            ends[(freeze, u)] = Tested(t_test(diff), {"axis": axis, "u": u, "freeze": freeze, "from": here[0], "to": here[-1]})
            ends_tost[(freeze, u)] = tost(diff, MARGIN_GAIN)
        out.append(FactorSweep(axis, levels, shared, cells, sc, ends, ends_tost))
    correct([t for s in out for t in s.cells.values()])
    correct([t for s in out for t in s.ends.values()])
    return out


def as_records(items: Iterable[Tested]) -> list[dict[str, Any]]:
    out = []
    for t in items:
        i = t.interval or t.raw
        out.append({"mean": t.test.mean, "low": i.low, "high": i.high, "p_holm": t.p_holm, "q_bh": t.q_bh, "n": t.test.n})
    return out
