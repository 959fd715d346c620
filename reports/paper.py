"""The paper suite's report: `paper.md` and `plots/paper-*.png`, from the suite's stored runs.

It checks the claims of "Towards Understanding Feature Learning in Parameter Transfer" on
the signal-noise task: target accuracy against the fraction of filters inherited, the phase
diagram of the paired gain over scratch across the benign/harmful boundary of the source
(R = n_source |mu_1|^4 / (sigma_p^4 d)), and the feature-learning diagnostics (signal
learning against noise memorisation) of inherited and fresh filters over training.

Unlike the harness, this module knows one task (signal-noise: its parameters and diagnostic
keys) and the built-in transfer strategies by name, on purpose: it is about the paper's
claims. The harness reaches it only through the paper suite's `report` key (ptbench.results.suite_report),
so nothing generic depends on it. Every sentence under a plot is filled in from the numbers.

The tests behind the sentences live in `paper_claims.py` (per-cell gains corrected by Holm
over each figure, paired contrasts for the directional claims, TOST for "no effect",
iso-scalar families, finite-size scaling, mechanism controls) and `paper_scalars.py` (the
candidate scalars, fitted and cross-validated); `paper_sections.py` renders the sections they
feed. Besides paper.md and its plots, the report writes paper.json: the candidate scalars with
their formulas, coefficients, thresholds and cross-validated accuracies, and the best one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tabulate import tabulate

from ptbench.results import plots
from ptbench.results.stats import Interval, incidence, mean_ci, paired_to_baseline, t_quantile_975, wilson

from . import paper_claims as claims_mod
from . import paper_scalars as scalars
from .paper_claims import Tested, correct, gain_cell, p_text

TASK = "signal-noise"
HEAT_FRACTION = 0.5  # the heatmaps show the paper's transfer with half the filters inherited
AXES = {"n_source": "n_source (source examples)", "source_noise": "source noise σ_p"}
MODES = ((False, "fine-tuned"), (True, "frozen"))
PLOT_DIR = "plots"


# --------------------------------------------------------------------------- preparing runs


def boundary_ratio(params: dict[str, Any]) -> float:
    """n |mu|^4 / (sigma_p^4 d) of the source (Kou et al. 2023): above ~1 training is
    benign (the model learns the signal), below it harmful (it memorises noise)."""
    mu2 = params.get("shared", 1.0) ** 2 + params.get("specific", 1.0) ** 2
    noise = params.get("source_noise", 1.0)
    if noise == 0:
        return math.inf
    return params.get("n_source", 200) * mu2**2 / (noise**4 * params.get("d", 1000))


def _transfer(strategy: str, params: dict[str, Any]) -> tuple[float, Any]:
    """(fraction of filters inherited, frozen?) for the strategies that are points on the
    paper's alpha axis; (NaN, None) for the others."""
    name = strategy.split("[", 1)[0]
    if name == "scratch":
        return 0.0, None
    if name == "partial-filters":
        return float(params["fraction"]), bool(params["freeze"])
    if name == "full":
        return 1.0, bool(params.get("freeze", False))
    return math.nan, None


def prepare(runs: pd.DataFrame, baseline: str = "scratch") -> pd.DataFrame:
    """The suite's ok signal-noise runs, one column per task parameter, the strategy's place
    on the fraction axis, R, and `delta`: target accuracy minus the baseline's, same seed."""
    ok = runs[(runs["status"] == "ok") & (runs["task"].str.split("[", n=1).str[0] == TASK)].copy()
    if ok.empty:
        return ok
    ok = paired_to_baseline(ok.reset_index(drop=True), baseline)
    params = pd.DataFrame(list(ok["task_params"]), index=ok.index)
    ok = pd.concat([ok, params.add_prefix("p_")], axis=1)
    placed = [_transfer(s, p) for s, p in zip(ok["strategy"], ok["strategy_params"])]
    ok["fraction"] = [f for f, _ in placed]
    ok["freeze"] = [z for _, z in placed]
    ok["family"] = ok["strategy"].str.split("[", n=1).str[0]
    ok["R"] = [boundary_ratio(p) for p in ok["task_params"]]
    if "p_trace" not in ok:
        ok["p_trace"] = 0
    ok["traced"] = ok["p_trace"].fillna(0) > 0
    return ok


# --------------------------------------------------------------------------- formatting


def pp(interval: Interval) -> str:
    """A difference in percentage points with its interval: '+8.4 pp [6.1, 10.7]'."""
    return interval.fmt(signed=True).replace(" [", " pp [", 1) if interval.n >= 2 else interval.fmt(signed=True) + " pp"


def pct(interval: Interval) -> str:
    return interval.fmt() + ("" if interval.n >= 2 else "%")


def num(value: float) -> str:
    return f"{value:g}"


def ratio(value: float) -> str:
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def regime_label(row: pd.Series, varying: Iterable[str]) -> str:
    names = {"p_shared": "|u|", "p_n_source": "n_source", "p_source_noise": "σ_p"}
    parts = [f"{names.get(k, k[2:])}={num(row[k])}" for k in varying]
    return f"{', '.join(parts)} (R={ratio(row['R'])})"


@dataclass
class Cell:
    """The paired comparison of one strategy with the baseline on one task: the 95% interval
    of the gain, accuracy, incidence (below / tied within one test example / above), and the
    t test that the figure's Holm correction fills in (`tested`)."""

    delta: Interval
    acc: Interval
    negative_k: int
    negative: Interval
    tested: Tested | None = None

    @classmethod
    def of(cls, rows: pd.DataFrame) -> "Cell":
        deltas = rows["delta"].dropna()
        tested = gain_cell(rows)
        k = tested.inc.below
        return cls(mean_ci(deltas), mean_ci(rows["target_acc"]), k, wilson(k, len(deltas)), tested)

    @property
    def incidence(self) -> str:
        return self.tested.inc.fmt() if self.tested is not None and self.tested.inc.n else "n/a"

    @property
    def down(self) -> bool:
        return self.tested is not None and self.tested.down

    @property
    def up(self) -> bool:
        return self.tested is not None and self.tested.up

    @property
    def corrected(self) -> Interval:
        return self.tested.interval if self.tested is not None and self.tested.interval is not None else self.delta

    def mark(self) -> str:
        """The gain with its 95% interval, starred when Holm over the figure rejects 0."""
        return self.delta.fmt(signed=True) + ("*" if self.up or self.down else "")


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    """A pipe table; '|' inside a cell (|u|) is escaped so it does not split the cell."""
    def esc(value: Any) -> str:
        return str(value).replace("|", "\\|")

    return tabulate([[esc(v) for v in row] for row in rows], headers=[esc(h) for h in headers], tablefmt="pipe", disable_numparse=True)


def _task_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("p_") and c != "p_trace"]


def _varying(df: pd.DataFrame) -> list[str]:
    cols = _task_columns(df)
    return [c for c in cols if df[c].map(repr).nunique() > 1]


# --------------------------------------------------------------------------- 1. the fraction


def fraction_section(df: pd.DataFrame, out: Path, written: list[Path]) -> list[str]:
    pf = df[~df["traced"] & (df["family"] == "partial-filters")]
    counts = pf.groupby("task")["fraction"].nunique()
    tasks = list(counts[counts >= 3].index)
    zero = set(pf[pf["fraction"] == 0]["task"])
    if any(t in zero for t in tasks):  # the regimes run for this figure (with the fraction-0 check)
        tasks = [t for t in tasks if t in zero]
    lines = ["## 1. Target accuracy against the fraction inherited", ""]
    if not tasks:
        return lines + ["No task in the store has `partial-filters` at three or more fractions.", ""]
    regimes = df[df["task"].isin(tasks)]
    varying = _varying(regimes) or ["p_shared"]
    order = regimes.groupby("task")["R"].first().sort_values(ascending=False).index
    labels = {t: regime_label(regimes[regimes["task"] == t].iloc[0], varying) for t in order}
    cells: dict[tuple[str, Any, float], Cell] = {}
    for (task, freeze, fraction), rows in regimes[regimes["family"] == "partial-filters"].groupby(["task", "freeze", "fraction"]):
        cells[(task, freeze, fraction)] = Cell.of(rows)
    for task in order:  # fraction 0 is scratch when partial-filters at 0 was not run
        scratch = regimes[(regimes["task"] == task) & (regimes["family"] == "scratch")]
        for freeze, _ in MODES:
            if (task, freeze, 0.0) not in cells and len(scratch):
                cells[(task, freeze, 0.0)] = Cell.of(scratch)
    fractions = sorted({f for (_, _, f) in cells})
    correct([c.tested for (_, _, f), c in cells.items() if f > 0 and c.tested is not None])
    panels = []
    for freeze, mode in MODES:
        plot_lines = []
        for task in order:
            xs = [f for f in fractions if (task, freeze, f) in cells]
            accs = [cells[(task, freeze, f)].acc for f in xs]
            plot_lines.append(plots.Line(labels[task], xs, [a.mean * 100 for a in accs], [a.low * 100 for a in accs], [a.high * 100 for a in accs]))
        panels.append(plots.LinePanel(f"{mode} inherited filters", plot_lines, ylabel="target test accuracy %"))
    path = plots.line_panels(out / PLOT_DIR / "paper-fraction.png", panels, "fraction of filters inherited (0 = scratch)",
                             "Target accuracy against the fraction inherited, one line per regime (95% bands over seeds)",
                             xticks=fractions)
    written.append(path)
    lines += [f"![target accuracy against the fraction inherited]({PLOT_DIR}/{path.name})", ""]
    lines += [fraction_sentence(cells, order, labels, fractions), ""]
    check = regimes[(regimes["family"] == "partial-filters") & (regimes["fraction"] == 0.0)]["delta"].dropna()
    if len(check):
        lines += [
            f"Check: `partial-filters` at fraction 0 inherits nothing, and matches `scratch` in all {len(check)} "
            f"paired runs to within {check.abs().max() * 100:.2g} pp (it should be exactly 0).",
            "",
        ]
    headers = ["regime", "mode", "scratch acc %"] + [f"Δ at {num(f)} (pp) [95% CI] (below/tied/above)" for f in fractions if f > 0]
    body = []
    for task in order:
        scratch = Cell.of(regimes[(regimes["task"] == task) & (regimes["family"] == "scratch")])
        for freeze, mode in MODES:
            row = [labels[task], mode, scratch.acc.fmt()]
            for f in fractions:
                if f > 0:
                    c = cells.get((task, freeze, f))
                    row.append("n/a" if c is None else f"{c.mark()} ({c.incidence})")
            body.append(row)
    lines += [_table(body, headers), "",
              "\\* Holm-corrected over the figure's cells: the gain differs from 0 at family-wise 5%. "
              "Below/tied/above: seeds whose accuracy is more than one test example below scratch, within one, above.", ""]
    return lines


def fraction_sentence(cells: dict, order: list[str], labels: dict[str, str], fractions: list[float]) -> str:
    """Per mode, for the regimes with the largest and the smallest R: the range of Δ over
    the fractions above 0, or 'every fraction helps/hurts' when all intervals agree."""
    parts = []
    ends = [order[0]] if len(order) == 1 else [order[0], order[-1]]
    for freeze, mode in MODES:
        clauses = []
        for task in ends:
            here = [(f, cells[(task, freeze, f)]) for f in fractions if f > 0 and (task, freeze, f) in cells]
            if not here:
                continue
            best = max(here, key=lambda fc: fc[1].delta.mean)
            worst = min(here, key=lambda fc: fc[1].delta.mean)
            if all(c.up for _, c in here):
                verdict = "every fraction helps"
            elif all(c.down for _, c in here):
                verdict = "every fraction hurts"
            else:
                verdict = "Δ ranges"
            verdict += "," if verdict != "Δ ranges" else ""
            clauses.append(
                f"at {labels[task]} {verdict} from {pp(worst[1].corrected)} (fraction {num(worst[0])}) to "
                f"{pp(best[1].corrected)} (fraction {num(best[0])})"
            )
        if clauses:
            parts.append(f"{mode.capitalize()}, " + "; ".join(clauses))
    return ("**What it shows:** " + ". ".join(parts) + " (Δ: paired difference to scratch; intervals are Holm step-down "
            "intervals over the figure's cells, and 'helps'/'hurts' means Holm rejects 0 for every fraction).")


# --------------------------------------------------------------------------- 2-3. heatmaps


def heatmap_slice(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """The tasks of the (|u|, x) plane: among untraced tasks run with the heatmap strategy,
    those that agree on every other parameter, taking the agreement with the most cells."""
    rows = df[~df["traced"]]
    has = rows[(rows["family"] == "partial-filters") & (rows["fraction"] == HEAT_FRACTION)]["task"].unique()
    rows = rows[rows["task"].isin(has)]
    if rows.empty or f"p_{x}" not in rows:
        return rows.iloc[0:0]
    others = [c for c in _task_columns(rows) if c not in (f"p_{x}", "p_shared")]
    key = rows[others].apply(lambda r: "|".join(map(repr, r)), axis=1) if others else pd.Series("", index=rows.index)
    best, best_cells = None, 0
    for value, group in rows.groupby(key):
        cells = group[[f"p_{x}", "p_shared"]].drop_duplicates()
        if len(cells) > best_cells:
            best, best_cells = value, len(cells)
    chosen = rows[key == best]
    if chosen[f"p_{x}"].nunique() < 2 or chosen["p_shared"].nunique() < 2:
        return rows.iloc[0:0]
    return chosen


def _axis_values(ticks: list[float], positions: np.ndarray) -> np.ndarray:
    """Factor values at fractional cell positions: log-linear between ticks, extrapolated
    from the end segments (cell j holds ticks[j])."""
    t = np.asarray(ticks, dtype=float)
    if len(t) == 1:
        return np.full_like(positions, t[0], dtype=float)
    logs = np.log(t)
    idx = np.clip(np.floor(positions).astype(int), 0, len(t) - 2)
    frac = positions - idx
    return np.exp(logs[idx] + frac * (logs[idx + 1] - logs[idx]))


def heatmap_boundary(fit: "scalars.ScalarFit | None", plane: pd.DataFrame, x: str, xs: list, ys: list, freeze: bool) -> plots.Boundary | None:
    """The fitted scalar's threshold (and its interval) on the (x, |u|) plane, at the
    heatmap's fraction and the plane's other parameters."""
    if fit is None or not math.isfinite(fit.threshold) or fit.threshold <= 0:
        return None
    gx = np.linspace(-0.5, len(xs) - 0.5, 121)
    gy = np.linspace(-0.5, len(ys) - 0.5, 121)
    X, Y = np.meshgrid(_axis_values(xs, gx), _axis_values(ys, gy))
    base = plane.iloc[0]
    grid = pd.DataFrame({c: base[c] for c in _task_columns(plane)}, index=range(X.size))
    grid[f"p_{x}"] = X.ravel()
    grid["p_shared"] = Y.ravel()
    grid["fraction"] = HEAT_FRACTION
    values = np.log(fit.scalar(scalars.factor_frame(grid))).reshape(X.shape)
    low, high = fit.threshold_interval
    sign = 1.0 if fit.increasing else -1.0

    def level(t: float) -> np.ndarray | None:
        return sign * (values - math.log(t)) if 0 < t < math.inf else None

    label = f"fitted boundary: {fit.candidate.key} = {fit.threshold:.3g} [{low:.3g}, {high:.3g}] (dotted: its 95% interval)"
    return plots.Boundary(gx, gy, level(fit.threshold), level(low), level(high), label)


def _dense_rows(plane: pd.DataFrame, x: str) -> pd.DataFrame:
    """Drop |u| rows that hold under half of the plane's x values (a cell another sweep
    happens to share), so the heatmap shows the grid that was run."""
    width = plane[f"p_{x}"].nunique()
    per_row = plane.groupby("p_shared")[f"p_{x}"].nunique()
    keep = per_row[per_row >= max(2, width / 2)].index
    return plane[plane["p_shared"].isin(keep)]


def heatmap_section(df: pd.DataFrame, out: Path, x: str, number: int, written: list[Path], fits: dict | None = None) -> list[str]:
    title = f"## {number}. Paired gain over scratch across |u| and {x}"
    plane = heatmap_slice(df, x)
    if plane.empty:
        return [title, "", f"The store has no grid over |u| and {x} with `partial-filters[fraction={num(HEAT_FRACTION)}]`.", ""]
    plane = _dense_rows(plane, x)
    xs = sorted(plane[f"p_{x}"].unique())
    ys = sorted(plane["p_shared"].unique())
    fixed = {c[2:]: plane[c].iloc[0] for c in _task_columns(plane) if c not in (f"p_{x}", "p_shared")}
    cells: dict[tuple[Any, float, float], Cell] = {}
    ratios: dict[tuple[float, float], float] = {}
    scratch_acc: dict[tuple[float, float], Interval] = {}
    firsts: dict[tuple[Any, float, float], pd.DataFrame] = {}
    for (xv, yv), rows in plane.groupby([f"p_{x}", "p_shared"]):
        ratios[(xv, yv)] = float(rows["R"].iloc[0])
        scratch_acc[(xv, yv)] = mean_ci(rows[rows["family"] == "scratch"]["target_acc"])
        for freeze, _ in MODES:
            sel = rows[(rows["family"] == "partial-filters") & (rows["fraction"] == HEAT_FRACTION) & (rows["freeze"] == freeze)]
            if len(sel):
                cells[(freeze, xv, yv)] = Cell.of(sel)
                firsts[(freeze, xv, yv)] = sel.iloc[[0]]
    correct([c.tested for c in cells.values()])
    panels = []
    boundaries = {}
    for freeze, mode in MODES:
        values = np.full((len(ys), len(xs)), np.nan)
        marked = np.zeros_like(values, dtype=bool)
        notes = [["" for _ in xs] for _ in ys]
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                notes[i][j] = f"R={ratio(ratios[(xv, yv)])}" if (xv, yv) in ratios else ""
                c = cells.get((freeze, xv, yv))
                if c is not None and c.delta.n:
                    values[i, j] = c.delta.mean * 100
                    marked[i, j] = c.down
        fit = fits[freeze].best if fits and freeze in fits else None
        boundary = heatmap_boundary(fit, plane, x, xs, ys, freeze)
        at = {(xv, yv): float(fit.scalar(scalars.factor_frame(r))[0]) for (f, xv, yv), r in firsts.items() if f == freeze} if fit else {}
        boundaries[freeze] = (fit, boundary, at)
        panels.append(plots.HeatPanel(f"{num(HEAT_FRACTION * 100)}% of filters inherited, {mode}", values, marked, notes, boundary=boundary))
    name = f"paper-heatmap-{x}.png"
    path = plots.heatmap_panels(
        out / PLOT_DIR / name, panels, AXES.get(x, x), "|u| (shared signal)", [num(v) for v in xs], [num(v) for v in ys],
        title=f"Paired gain over scratch (pp) across |u| and {x}\nR = n|μ₁|⁴/(σ_p⁴d) of the source in each cell; "
              "solid line: the best candidate scalar's fitted sign boundary",
        colorbar_label="target accuracy minus scratch (pp)", mark_label="negative transfer: Holm-corrected gain below 0",
    )
    written.append(path)
    fixed_text = ", ".join(f"{k}={num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v}" for k, v in fixed.items())
    lines = [title, "", f"![paired gain over scratch across |u| and {x}]({PLOT_DIR}/{name})", ""]
    lines += [heatmap_sentence(cells, ratios, xs, ys, x, boundaries), ""]
    lines += [f"Fixed: {fixed_text}. Hatched cells: the gain is below zero after Holm's correction over the figure's "
              f"{sum(c.delta.n >= 2 for c in cells.values())} cells (both modes).", ""]
    headers = (["|u|", x, "R", "scratch acc %"] + [f"Δ {mode} (pp) [95% CI]" for _, mode in MODES]
               + [f"Holm p / BH q, {mode}" for _, mode in MODES] + [f"below/tied/above, {mode}" for _, mode in MODES])
    body = []
    for yv in ys:
        for xv in xs:
            if (xv, yv) not in ratios:
                continue
            row = [num(yv), num(xv), ratio(ratios[(xv, yv)]), scratch_acc[(xv, yv)].fmt()]
            row += [cells[(f, xv, yv)].mark() if (f, xv, yv) in cells else "n/a" for f, _ in MODES]
            row += [f"{p_text(cells[(f, xv, yv)].tested.p_holm)} / {p_text(cells[(f, xv, yv)].tested.q_bh)}" if (f, xv, yv) in cells else "n/a"
                    for f, _ in MODES]
            row += [cells[(f, xv, yv)].incidence if (f, xv, yv) in cells else "n/a" for f, _ in MODES]
            body.append(row)
    lines += [_table(body, headers), "", "\\* Holm rejects a zero gain (family-wise 5% over the figure).", ""]
    return lines


def heatmap_sentence(cells: dict, ratios: dict, xs: list, ys: list, x: str, boundaries: dict | None = None) -> str:
    parts = []
    for freeze, mode in MODES:
        here = {(xv, yv): c for (f, xv, yv), c in cells.items() if f == freeze and c.delta.n}
        if not here:
            continue
        negative = [k for k, c in here.items() if c.down]
        positive = [k for k, c in here.items() if c.up]
        text = f"{mode}, the gain is below zero (Holm) in {len(negative)} of {len(here)} cells"
        if negative:
            us = sorted({yv for _, yv in negative})
            rs = [ratios[k] for k in negative]
            span = f"R={ratio(min(rs))}" if len(rs) == 1 else f"R from {ratio(min(rs))} to {ratio(max(rs))}"
            text += f" (|u| in {{{', '.join(num(u) for u in us)}}}, {span})"
        text += f" and above zero in {len(positive)}"
        best_key = max(here, key=lambda k: here[k].delta.mean)
        text += (f"; the largest gain is {pp(here[best_key].corrected)} at |u|={num(best_key[1])}, {x}={num(best_key[0])} "
                 f"(R={ratio(ratios[best_key])})")
        top = max(ys)
        row = [(xv, here[(xv, top)]) for xv in xs if (xv, top) in here]
        if len(row) >= 2:
            text += (f"; at |u|={num(top)} it goes from {row[0][1].delta.fmt(signed=True)} pp at {x}={num(row[0][0])} "
                     f"to {row[-1][1].delta.fmt(signed=True)} pp at {x}={num(row[-1][0])}")
        if negative and positive:
            both_r = sorted(ratios[k] for k in negative), sorted(ratios[k] for k in positive)
            if both_r[0][-1] >= both_r[1][0]:
                text += (f"; R does not separate the signs here: negative cells reach R={ratio(both_r[0][-1])}, "
                         f"positive ones start at R={ratio(both_r[1][0])}")
        fit, boundary, at = (boundaries or {}).get(freeze, (None, None, {}))
        if fit is not None:
            wrong = _misplaced(fit, at, negative, positive)
            text += (f"; the best candidate scalar ({fit.candidate.key}, §6) puts its boundary at {fit.candidate.key} = "
                     f"{fit.threshold:.3g} [{fit.threshold_interval[0]:.3g}, {fit.threshold_interval[1]:.3g}]"
                     + (f", with {wrong} of the {len(negative) + len(positive)} significant cells on the wrong side" if negative or positive else ""))
        parts.append(text)
    if not parts:
        return ""
    return "**What it shows:** " + ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def _misplaced(fit, at: dict, negative: list, positive: list) -> int:
    """How many significant cells the fitted threshold puts on the wrong side."""
    wrong = 0
    for key in negative + positive:
        if key not in at:
            continue
        predicted_positive = (at[key] > fit.threshold) == fit.increasing
        wrong += int(predicted_positive != (key in positive))
    return wrong


# --------------------------------------------------------------------------- 4. trajectories


def _band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t band over seeds (rows), per step (columns)."""
    n = matrix.shape[0]
    mean = matrix.mean(axis=0)
    if n < 2:
        return mean, mean, mean
    half = t_quantile_975(n - 1) * matrix.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def _trajectories(rows: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, [seeds, steps] values of `key`) from the target trajectories of these runs."""
    series = []
    steps = None
    for diag in rows["diagnostics"]:
        records = (diag or {}).get("trajectory", {}).get("target") or []
        if not records or key not in records[0]:
            continue
        these = [r["step"] for r in records]
        if steps is None:
            steps = these
        if these != steps:
            continue
        series.append([r[key] for r in records])
    if not series:
        return None
    return np.asarray(steps, dtype=float), np.asarray(series, dtype=float)


QUANTITIES = (("u_max", "signal learning ⟨w, u⟩ (max over filters)"),
              ("v1_max", "source-specific ⟨w, v₁⟩ (max over filters)"),
              ("noise", "noise memorisation ⟨w, ξ⟩ (mean of max)"))


def trajectory_section(df: pd.DataFrame, out: Path, number: int, written: list[Path]) -> list[str]:
    title = f"## {number}. Feature learning during target training: inherited against fresh filters"
    traced = df[df["traced"]]
    transfer = traced[(traced["family"] == "partial-filters") & (traced["freeze"] == False)]  # noqa: E712
    if transfer.empty:
        return [title, "", "No traced fine-tuning runs in the store (a task with `trace` > 0).", ""]
    order = transfer.groupby("task")["R"].first().sort_values(ascending=False).index
    varying = _varying(traced) or ["p_shared"]
    panels, summary = [], {}
    for task in order:
        label = regime_label(traced[traced["task"] == task].iloc[0], varying)
        runs = transfer[transfer["task"] == task]
        fraction = runs["fraction"].iloc[0]
        scratch = traced[(traced["task"] == task) & (traced["family"] == "scratch")]
        for key, name in QUANTITIES:
            lines = []
            for group, who, source in (("inherited", f"inherited ({num(fraction * 100)}%)", runs), ("fresh", "fresh", runs), ("all", "scratch (all filters)", scratch)):
                data = _trajectories(source, f"{key}_{group}")
                if data is None:
                    continue
                steps, values = data
                mean, low, high = _band(values)
                lines.append(plots.Line(who, steps, mean, low, high, marker=None, style="--" if group == "all" else "-"))
                summary[(task, key, group)] = (mean[0], mean[-1], values.shape[0])
            panels.append(plots.LinePanel(f"{label}: {name}", lines))
    path = plots.line_panels(out / PLOT_DIR / "paper-trajectories.png", panels, "target training step",
                             "Signal learning and noise memorisation over target training (mean and 95% band over seeds)",
                             columns=len(QUANTITIES), sharey=False)
    written.append(path)
    lines = [title, "", f"![signal learning and noise memorisation over training]({PLOT_DIR}/{path.name})", ""]
    lines += [trajectory_sentence(summary, order, {t: regime_label(traced[traced["task"] == t].iloc[0], varying) for t in order}), ""]
    lines += [
        "Signal learning is j·⟨w_{j,r}, s⟩ for the signal vector s (norm included; j = ±1 the filter's class), "
        "noise memorisation the max over filters of ⟨w_{j,r}, ξ_i⟩ averaged over the target's training noise "
        "patches ξ_i, as in Cao et al. (2022) and Kou et al. (2023).",
        "",
    ]
    return lines


def trajectory_sentence(summary: dict, order: Iterable[str], labels: dict[str, str]) -> str:
    parts = []
    for task in order:
        def get(key: str, group: str) -> tuple[float, float, int] | None:
            return summary.get((task, key, group))

        u_in, u_fr, n_in, n_fr, v_in = get("u_max", "inherited"), get("u_max", "fresh"), get("noise", "inherited"), get("noise", "fresh"), get("v1_max", "inherited")
        if not (u_in and u_fr and n_in and n_fr and v_in):
            continue
        text = (f"at {labels[task]}, inherited filters start target training with signal learning ⟨w, u⟩ = {u_in[0]:.2f} "
                f"(fresh: {u_fr[0]:.2f}) and end at {u_in[1]:.2f} (fresh: {u_fr[1]:.2f}), carry ⟨w, v₁⟩ = {v_in[0]:.2f} "
                f"from the source (end: {v_in[1]:.2f}), and end with noise memorisation {n_in[1]:.2f} against {n_fr[1]:.2f} "
                f"for fresh filters")
        scratch = get("noise", "all")
        if scratch:
            text += f" and {scratch[1]:.2f} for scratch"
        parts.append(text + f" (means over {u_in[2]} seeds)")
    if not parts:
        return ""
    return "**What it shows:** " + "; ".join(p[0].upper() + p[1:] if i == 0 else p for i, p in enumerate(parts)) + "."


def diagnostics_table(df: pd.DataFrame) -> list[str]:
    """End-of-training diagnostics of the fraction regimes (untraced runs, every seed)."""
    rows = df[~df["traced"]]
    transfer = rows[(rows["family"] == "partial-filters") & (rows["fraction"] == HEAT_FRACTION) & (rows["freeze"] == False)]  # noqa: E712
    regimes = rows[(rows["family"] == "partial-filters")].groupby("task")["fraction"].nunique()
    tasks = [t for t in regimes[regimes >= 3].index if t in set(transfer["task"])]
    zero = set(rows[(rows["family"] == "partial-filters") & (rows["fraction"] == 0)]["task"])
    if any(t in zero for t in tasks):  # the fraction figure's regimes
        tasks = [t for t in tasks if t in zero]
    if not tasks:
        return []
    varying = _varying(rows[rows["task"].isin(tasks)]) or ["p_shared"]
    order = rows[rows["task"].isin(tasks)].groupby("task")["R"].first().sort_values(ascending=False).index

    def stat(frame: pd.DataFrame, side: str, key: str) -> str:
        values = [d.get(side, {}).get(key) for d in frame["diagnostics"]]
        return mean_ci([v for v in values if v is not None]).fmt(scale=1, decimals=2)

    body = []
    for task in order:
        t_rows = transfer[transfer["task"] == task]
        s_rows = rows[(rows["task"] == task) & (rows["family"] == "scratch")]
        body.append([
            regime_label(t_rows.iloc[0], varying),
            stat(s_rows, "source", "u_max_all"), stat(s_rows, "source", "v1_max_all"), stat(s_rows, "source", "noise_all"),
            stat(t_rows, "target", "u_max_inherited"), stat(t_rows, "target", "u_max_fresh"),
            stat(t_rows, "target", "v1_max_inherited"),
            stat(t_rows, "target", "noise_inherited"), stat(t_rows, "target", "noise_fresh"),
            stat(s_rows, "target", "u_max_all"), stat(s_rows, "target", "noise_all"),
        ])
    headers = ["regime", "source: ⟨w,u⟩", "source: ⟨w,v₁⟩", "source: noise",
               "inherited: ⟨w,u⟩", "fresh: ⟨w,u⟩", "inherited: ⟨w,v₁⟩", "inherited: noise", "fresh: noise",
               "scratch: ⟨w,u⟩", "scratch: noise"]
    return [
        f"End of training, every seed of the fraction regimes: the source model, then the target model fine-tuned with "
        f"{num(HEAT_FRACTION * 100)}% of its filters inherited (split into inherited and fresh filters), then scratch "
        "(max over filters; noise: mean over training noise patches of the max over filters; mean [95% CI] over seeds).",
        "",
        _table(body, headers),
        "",
    ]


# --------------------------------------------------------------------------- the page


def _header(runs: pd.DataFrame, df: pd.DataFrame, baseline: str) -> list[str]:
    seeds = int(df["seed"].nunique()) if len(df) else 0
    versions = ", ".join(sorted({str(v) for v in runs["ptbench_version"].dropna()})) or "?"
    commits = ", ".join(sorted({str(c)[:10] for c in runs["git_commit"].dropna()})) or "?"
    devices = ", ".join(sorted({str(d) for d in runs["device"].dropna()})) or "?"
    groups = df.drop_duplicates(["task", "seed"])
    train_seconds = float(groups["source_seconds"].fillna(0).sum() + df["target_seconds"].fillna(0).sum())
    stamps = pd.to_datetime(runs["created_at"], format="%Y-%m-%dT%H:%M:%S%z", errors="coerce").dropna()
    span = (stamps.max() - stamps.min()).total_seconds() if len(stamps) else math.nan
    failed = int((runs["status"] != "ok").sum())
    r = df.drop_duplicates("task")["R"] if len(df) else pd.Series(dtype=float)
    lines = [
        "# The paper suite: when does parameter transfer help, and when does it hurt?",
        "",
        "Generated by `python -m ptbench run --suite paper` (or `python -m ptbench report --suite paper`) from the store; "
        "every number and every sentence below comes from the stored runs.",
        "",
        f"{len(runs)} runs ({failed} not ok) over {df['task'].nunique() if len(df) else 0} signal-noise task variants and "
        f"{seeds} seeds; ptbench {versions}, commit {commits}, device {devices}. Training time summed over runs: "
        f"{train_seconds / 60:.1f} min; first to last stored run: {span / 60:.1f} min.",
        "",
        "The setting is the paper's: a source task with signal u + v₁ and a target task with signal u + v₂ (u shared, "
        "v₁ ⟂ v₂), two-layer ReLU CNNs, and a fraction of the source model's filters inherited by the target model, "
        f"fine-tuned or frozen. Every strategy is compared with `{baseline}` seed by seed (same target data, same "
        "initialisation of the filters not inherited): Δ is that paired difference in percentage points, with a 95% t "
        "interval over seeds; the negative transfer gap of Wang et al. (CVPR 2019) is −Δ. "
        "R = n_source |μ₁|⁴ / (σ_p⁴ d), |μ₁|² = |u|² + |v₁|², places the source's training relative to the "
        "benign/harmful boundary of Kou et al. (2023) (benign when R is large, harmful when it is small; the constant is "
        "not known, so read R ≈ 1 as the neighbourhood of the boundary)"
        + (f"; in this suite R runs from {ratio(float(r.min()))} to {ratio(float(r.max()))}." if len(r) else "."),
        "",
    ]
    return lines


def render(runs: pd.DataFrame, out: Path, baseline: str = "scratch") -> tuple[str, list[Path], dict | None]:
    """The page's markdown, the plots it drew under out/plots/, and paper.json's content
    (None when there is nothing to fit)."""
    from . import paper_sections as sections

    df = prepare(runs, baseline)
    lines = _header(runs, df, baseline)
    written: list[Path] = []
    if df.empty:
        lines += ["No successful signal-noise runs in the store yet: `python -m ptbench run --suite paper`.", ""]
        return "\n".join(lines), written, None
    n_test = int(df["p_n_test"].mode().iloc[0]) if "p_n_test" in df else 2000
    fits = scalars.fit_all(df, MODES)
    claims = claims_mod.directional_claims(df)
    regimes = claims_mod.control_regimes(df)
    scaling = claims_mod.scaling_lines(df, HEAT_FRACTION)
    sweeps = claims_mod.factor_sweeps(df, HEAT_FRACTION)

    body: list[str] = []
    body += fraction_section(df, out, written)
    heat_n = heatmap_section(df, out, "n_source", 2, written, fits)
    heat_s = heatmap_section(df, out, "source_noise", 3, written, fits)
    body += heat_n + heat_s
    body += trajectory_section(df, out, 4, written)
    body += diagnostics_table(df)
    body += sections.claims_section(claims, 5)
    body += sections.scalars_section(fits, 6, out, written)
    fam_lines, fam_summary = sections.families_section(df, fits, 7, out, written)
    body += fam_lines
    body += sections.factors_section(sweeps, 8, out, written)
    body += sections.scaling_section(scaling, 9, out, written)
    body += sections.controls_section(regimes, 10, out, written)

    negatives = _heatmap_negatives(df)
    lines += sections.verdicts_section(claims, fits, regimes, fam_summary, negatives)
    lines += sections.statistics_note(n_test)
    lines += body
    summary = paper_json(fits, claims, fam_summary, negatives)
    return "\n".join(lines), written, summary


def _heatmap_negatives(df: pd.DataFrame) -> tuple[int, int]:
    """(Holm-significant negative cells, cells) over both heatmaps, each corrected over its figure."""
    neg = total = 0
    seen: set[tuple[str, Any]] = set()
    for x in ("n_source", "source_noise"):
        plane = heatmap_slice(df, x)
        if plane.empty:
            continue
        plane = _dense_rows(plane, x)
        sel = plane[(plane["family"] == "partial-filters") & (plane["fraction"] == HEAT_FRACTION)]
        tested = {}
        for (task, freeze), rows in sel.groupby(["task", "freeze"]):
            tested[(task, freeze)] = gain_cell(rows)
        correct(list(tested.values()))
        for key, t in tested.items():
            if key in seen:
                continue
            seen.add(key)
            total += 1
            neg += int(t.down)
    return neg, total


def paper_json(fits: dict, claims: list, fam_summary: dict, negatives: tuple[int, int]) -> dict:
    modes = {}
    for frozen, mf in fits.items():
        if not mf.fits:
            continue
        c = mf.ceiling
        modes[mf.mode] = {
            "cells": len(mf.cells), "seeds_with_a_sign": int(mf.cells.n.sum()),
            "candidates": [s.as_json() for s in mf.fits],
            "full_factor": None if c is None else {"sign_accuracy": c.accuracy, "cv_sign_accuracy": c.cv_accuracy,
                                                   "coefficients": c.coef, "log_likelihood": c.loglik},
            "per_cell_majority_accuracy": None if c is None else c.saturated_accuracy,
            "best": mf.best.candidate.key if mf.best else None,
        }
    pooled: dict[str, list[float]] = {}
    for frozen, mf in fits.items():
        for s in mf.fits:
            pooled.setdefault(s.candidate.key, []).append(s.cv_accuracy * mf.cells.n.sum())
    weights = sum(mf.cells.n.sum() for mf in fits.values() if mf.fits)
    overall = max(pooled, key=lambda k: sum(pooled[k])) if pooled and weights else None
    return {
        "generated_by": "ptbench.reports.paper",
        "correction": {"method": "holm", "alpha": 0.05, "also_reported": "fdr_bh",
                       "scope": "the cells of each figure; the contrasts of each claim"},
        "equivalence": {"test": "TOST", "margin_gain_pp": claims_mod.MARGIN_GAIN * 100, "margin_scratch_pp": claims_mod.MARGIN_SCRATCH * 100},
        "tie_margin_test_examples": claims_mod.TIE_EXAMPLES,
        "modes": modes,
        "best": {"per_mode": {m: v["best"] for m, v in modes.items()}, "overall": overall,
                 "overall_rule": "highest cross-validated sign accuracy pooled over the modes (weighted by seeds)"},
        "directional_claims": [{"claim": c.text, "contrasts": len(c.contrasts), "claimed_direction": len(c.supported),
                                "reversed": len(c.reversed)} for c in claims],
        "iso_scalar_families": fam_summary,
        "negative_heatmap_cells": {"holm_significant": negatives[0], "cells": negatives[1]},
    }


def write_report(runs: pd.DataFrame, out_dir: str | Path, baseline: str = "scratch") -> list[Path]:
    """Write out_dir/paper.md, out_dir/plots/paper-*.png and out_dir/paper.json (when the
    store has runs to fit); returns the files written."""
    out = Path(out_dir)
    text, written, summary = render(runs, out, baseline)
    page = out / "paper.md"
    page.write_text(text)
    files = [page] + written
    if summary is not None:
        path = out / "paper.json"
        path.write_text(json.dumps(_plain(summary), indent=1, allow_nan=False) + "\n")
        files.append(path)
    return files


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python ones, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
