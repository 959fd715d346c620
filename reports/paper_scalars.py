"""Candidate scalars for the sign and size of the paired gain, fitted and compared.

The paper folds alpha, N_1, |u|, the noise levels and d into one scalar that separates
beneficial from negative transfer. Its formula is not public, so this module fits candidates
to the suite's runs and asks how much one scalar explains:

* the sign of every seed's paired gain (a tie: at most one test example) against log S by
  a binomial logistic regression, P(gain > 0) = 1 / (1 + exp(-(a + b log S))), threshold
  S* = exp(-a / b) with a cluster-bootstrap interval over cells;
* its size by an isotonic (monotone) regression of the gain on log S;
* sign-classification accuracy under leave-one-cell-out cross-validation (the free constant
  c of a candidate is refitted in every fold), next to two ceilings: a logistic model with
  every factor as its own covariate, and the per-cell majority (no function of the cell can
  do better);
* a likelihood-ratio test of each candidate against the model that adds every factor to
  it (nested by construction): a small p-value says the factors carry sign information
  the scalar does not.

A cell is one (task variant, strategy); fits are per mode (inherited filters fine-tuned or
frozen), since the two modes need not share a threshold. Frozen transfer of every filter
(fraction 1) trains nothing, so it is left out of the fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ptbench.results.stats import chi2_sf, derived_rng, incidence, isotonic, isotonic_predict, logistic_fit

C_GRID = tuple(float(c) for c in np.geomspace(0.03, 100.0, 15))
BOOTSTRAP = 200
FAMILY_TOLERANCE = 0.03  # cells whose scalar agrees within 3% form an iso-scalar family


# --------------------------------------------------------------------------- factors


def factor_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The factors every candidate reads, one row per run of `df` (a prepared runs frame)."""
    def col(name: str, default: float) -> pd.Series:
        column = f"p_{name}"
        if column not in df:
            return pd.Series(default, index=df.index, dtype=float)
        return df[column].astype(object).where(df[column].notna(), default).astype(float)

    u = col("shared", 1.0)
    v1 = col("specific", 1.0)
    target_specific = df["p_target_specific"] if "p_target_specific" in df else pd.Series(None, index=df.index)
    target_signal = df["p_target_signal"] if "p_target_signal" in df else pd.Series(None, index=df.index)
    v2 = v1.copy()
    has_ts = target_specific.notna()
    v2[has_ts] = target_specific[has_ts].astype(float)
    has_sig = target_signal.notna()
    v2[has_sig] = np.sqrt(np.maximum(target_signal[has_sig].astype(float) ** 2 - u[has_sig] ** 2, 0.0))
    out = pd.DataFrame({
        "u": u, "v1": v1, "v2": v2,
        "N1": col("n_source", 200), "N2": col("n_target", 50),
        "s1": col("source_noise", 1.0), "s2": col("target_noise", 1.0),
        "d": col("d", 1000), "rho": col("overlap", 0.0), "flip": col("label_flip", 0.1),
        "n_test": col("n_test", 2000),
        "alpha": df["fraction"].astype(float) if "fraction" in df else pd.Series(math.nan, index=df.index),
    }, index=df.index)
    out["mu1sq"] = out["u"] ** 2 + out["v1"] ** 2
    out["mu2sq"] = out["u"] ** 2 + out["v2"] ** 2
    out["shared_dot"] = out["u"] ** 2 + out["rho"] * out["v1"] * out["v2"]  # <mu_1, mu_2>
    out["v1_perp_sq"] = out["v1"] ** 2 * (1 - out["rho"] ** 2)  # |v_1|^2 outside the target's signal
    return out


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    key: str
    name: str
    formula: str  # plain text, with c for the free constant
    why: str
    value: Callable[[pd.DataFrame, float], np.ndarray]
    free: bool = False  # whether c is fitted

    def __call__(self, f: pd.DataFrame, c: float = 1.0) -> np.ndarray:
        return np.maximum(np.asarray(self.value(f, c), dtype=float), 1e-300)


def _q(f: pd.DataFrame, c: float) -> np.ndarray:
    return f["shared_dot"] / np.sqrt(c * f["v1_perp_sq"] + f["s1"] ** 2 * f["d"] / f["N1"])


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("R", "source ratio (Kou et al.)", "N1 |mu1|^4 / (sigma_p1^4 d)",
              "benign/harmful training of the source (Kou et al. 2023)",
              lambda f, c: f["N1"] * f["mu1sq"] ** 2 / (f["s1"] ** 4 * f["d"])),
    Candidate("R_target", "target ratio", "N2 |mu2|^4 / (sigma_p2^4 d)",
              "how hard the target is on its own",
              lambda f, c: f["N2"] * f["mu2sq"] ** 2 / (f["s2"] ** 4 * f["d"])),
    Candidate("Gamma_alpha", "alpha-weighted shared ratio", "alpha N1 |u|^4 / (sigma_p1^4 d) / (1 + c |v1|^2 / |u|^2)",
              "the source ratio of the shared signal alone, discounted by the specific signal, times the fraction",
              lambda f, c: f["alpha"] * f["N1"] * f["u"] ** 4 / (f["s1"] ** 4 * f["d"]) / (1 + c * f["v1"] ** 2 / f["u"] ** 2), True),
    Candidate("M", "shared signal <mu1, mu2>", "|u|^2 + rho |v1| |v2|",
              "what the source's signal has in common with the target's (|u|^2 without overlap)",
              lambda f, c: f["shared_dot"]),
    Candidate("K", "shared against specific", "<mu1, mu2> / sqrt(|u|^2 + c |v1_perp|^2)",
              "the inherited signal direction's cosine with the target's, |u| weighed against |v1|",
              lambda f, c: f["shared_dot"] / np.sqrt(f["u"] ** 2 + c * f["v1_perp_sq"]), True),
    Candidate("Q", "inherited-filter SNR", "<mu1, mu2> / sqrt(c |v1_perp|^2 + sigma_p1^2 d / N1)",
              "an inherited filter w = g (u + v1) + memorised source noise (|noise| / g ~ sigma_p1 sqrt(d / N1)): "
              "its response to the target signal against its response to target noise",
              _q, True),
    Candidate("Q_alpha", "inherited-filter SNR per fraction", "<mu1, mu2> / (alpha sqrt(c |v1_perp|^2 + sigma_p1^2 d / N1))",
              "Q, with the inherited filters' share of the model counting against them",
              lambda f, c: _q(f, c) / f["alpha"], True),
)

BY_KEY = {c.key: c for c in CANDIDATES}
#: The scalar the suite's iso-scalar families were designed on (a pilot's best for frozen
#: transfer): Q_alpha at c = 8.
DESIGN = ("Q_alpha", 8.0)

FULL_FACTORS = ("log u", "log N1", "log sigma_p1", "|v1|^2", "log N2", "log sigma_p2", "label flip", "overlap", "log d", "log alpha")


def full_factor_matrix(f: pd.DataFrame) -> np.ndarray:
    """Every factor as its own covariate (logs where a factor is a positive scale)."""
    pos = lambda s: np.log(np.maximum(s.to_numpy(dtype=float), 1e-6))  # noqa: E731
    cols = [pos(f["u"]), pos(f["N1"]), pos(f["s1"]), f["v1"].to_numpy() ** 2, pos(f["N2"]), pos(f["s2"]),
            f["flip"].to_numpy(), f["rho"].to_numpy(), pos(f["d"]), pos(f["alpha"])]
    return np.column_stack(cols).astype(float)


# --------------------------------------------------------------------------- cells


@dataclass
class Cells:
    """One row per cell: factors, the sign counts (ties dropped) and the gains' moments."""

    frame: pd.DataFrame  # factor columns plus task, strategy, freeze, k, n, mean, ss, seeds, ties

    @property
    def k(self) -> np.ndarray:
        return self.frame["k"].to_numpy(dtype=float)

    @property
    def n(self) -> np.ndarray:
        return self.frame["n"].to_numpy(dtype=float)

    def __len__(self) -> int:
        return len(self.frame)


def fit_cells(df: pd.DataFrame, frozen: bool) -> Cells:
    """The cells the scalars are fitted on: `partial-filters` at a fraction above 0 (frozen
    fraction 1 excluded), untraced, with a paired baseline."""
    rows = df[(df["family"] == "partial-filters") & ~df["traced"] & (df["fraction"] > 0) & df["delta"].notna()]
    rows = rows[rows["freeze"] == frozen]
    if frozen:
        rows = rows[rows["fraction"] < 1]
    if rows.empty:
        return Cells(pd.DataFrame())
    f = factor_frame(rows)
    rows = pd.concat([rows[["task", "strategy", "delta", "seed"]], f], axis=1)
    out = []
    for (task, strategy), g in rows.groupby(["task", "strategy"], sort=True):
        inc = incidence(g["delta"], int(g["n_test"].iloc[0]))
        gains = g["delta"].to_numpy(dtype=float) * 100
        first = g.iloc[0]
        out.append({
            "task": task, "strategy": strategy, **{c: first[c] for c in f.columns},
            "k": inc.above, "n": inc.above + inc.below, "ties": inc.ties, "seeds": len(g),
            "mean": float(gains.mean()), "ss": float(((gains - gains.mean()) ** 2).sum()),
        })
    return Cells(pd.DataFrame(out))


# --------------------------------------------------------------------------- fitting


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(x), x])


def _loglik2(a, b, x, K, N):
    eta = a[:, None] + b[:, None] * x[None, :]
    return np.sum(K * eta - N * np.logaddexp(0.0, eta), axis=1)


def logistic2_many(x: np.ndarray, K: np.ndarray, N: np.ndarray, iters: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P = 1 / (1 + exp(-(a + b x))) fitted by Newton's method with step halving, once per row
    of K and N ([fits, cells]: the counts under each weighting of the cells, e.g. a fold that
    leaves one cell out or a bootstrap resample). Returns (a, b, log-likelihood) per fit; the
    same optimum as stats.logistic_fit on each weighting (tested)."""
    F = K.shape[0]
    a, b = np.zeros(F), np.zeros(F)
    ll = _loglik2(a, b, x, K, N)
    for _ in range(iters):
        eta = np.clip(a[:, None] + b[:, None] * x[None, :], -700.0, 700.0)
        p = 1.0 / (1.0 + np.exp(-eta))
        r = K - N * p
        w = N * p * (1 - p)
        g0, g1 = r.sum(1), r @ x
        h00, h01, h11 = w.sum(1), w @ x, w @ (x * x)
        det = h00 * h11 - h01 * h01
        det = np.where(np.abs(det) < 1e-300, 1e-300, det)
        da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        t = np.ones(F)
        new = _loglik2(a + da, b + db, x, K, N)
        for _ in range(30):
            worse = new < ll - 1e-12
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
            new = np.where(worse, _loglik2(a + t * da, b + t * db, x, K, N), new)
        a, b = a + t * da, b + t * db
        done = np.abs(new - ll) < 1e-10 * (1 + np.abs(ll))
        ll = new
        if done.all():
            break
    return a, b, ll


def _sign_accuracy(eta: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    hits = np.where(eta > 0, k, n - k)
    return float(hits.sum() / n.sum()) if n.sum() else math.nan


@dataclass
class ScalarFit:
    candidate: Candidate
    c: float
    coef: np.ndarray  # (a, b)
    cov: np.ndarray
    loglik: float
    accuracy: float
    cv_accuracy: float
    threshold: float
    threshold_interval: tuple[float, float]
    lrt: float
    lrt_df: int
    lrt_p: float
    r2: float
    cv_r2: float
    increasing: bool
    values: np.ndarray  # the scalar per cell, at c
    extra: dict[str, Any] = field(default_factory=dict)

    def scalar(self, f: pd.DataFrame) -> np.ndarray:
        return self.candidate(f, self.c)

    def as_json(self) -> dict[str, Any]:
        low, high = self.threshold_interval
        return {
            "key": self.candidate.key, "name": self.candidate.name, "formula": self.candidate.formula,
            "rationale": self.candidate.why,
            "constant_c": self.c if self.candidate.free else None,
            "logistic": {"intercept": float(self.coef[0]), "slope_log_scalar": float(self.coef[1])},
            "threshold": _finite(self.threshold), "threshold_interval_95": [_finite(low), _finite(high)],
            "sign_accuracy": self.accuracy, "cv_sign_accuracy": self.cv_accuracy,
            "log_likelihood": self.loglik,
            "lrt_vs_full_factor": {"statistic": self.lrt, "df": self.lrt_df, "p": self.lrt_p},
            "size_isotonic_r2": self.r2, "size_isotonic_cv_r2": self.cv_r2,
        }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _best_c(cand: Candidate, f: pd.DataFrame, K: np.ndarray, N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each weighting (row of K, N), the c on the grid with the highest likelihood and
    the (a, b, loglik) there. Returns (c, a, b, ll) per row."""
    grid = C_GRID if cand.free else (1.0,)
    best_c = np.full(K.shape[0], grid[0])
    best = None
    for c in grid:
        a, b, ll = logistic2_many(np.log(cand(f, c)), K, N)
        if best is None:
            best = [a, b, ll]
            continue
        better = ll > best[2] + 1e-9
        best_c = np.where(better, c, best_c)
        best = [np.where(better, a, best[0]), np.where(better, b, best[1]), np.where(better, ll, best[2])]
    return best_c, best[0], best[1], best[2]


def _threshold(coef: np.ndarray) -> float:
    a, b = coef
    if b == 0 or not np.isfinite(a) or not np.isfinite(b):
        return math.nan
    z = -a / b
    return math.exp(z) if z < 700 else math.inf


def _isotonic_r2(x: np.ndarray, cells: Cells, increasing: bool, folds: bool) -> float:
    """Share of the per-seed variance of the gain the isotonic fit on log S explains (fitted
    on cell means weighted by seeds, which is the per-seed fit since x is constant in a cell)."""
    fr = cells.frame
    w = fr["seeds"].to_numpy(dtype=float)
    means = fr["mean"].to_numpy(dtype=float)
    ss_within = fr["ss"].to_numpy(dtype=float).sum()
    grand = np.average(means, weights=w)
    total = ss_within + float((w * (means - grand) ** 2).sum())
    if total <= 0:
        return math.nan
    if not folds:
        kx, ky = isotonic(x, means, w, increasing)
        pred = isotonic_predict(kx, ky, x)
    else:
        pred = np.empty_like(means)
        for i in range(len(means)):
            keep = np.arange(len(means)) != i
            kx, ky = isotonic(x[keep], means[keep], w[keep], increasing)
            pred[i] = isotonic_predict(kx, ky, x[i:i + 1])[0]
    sse = ss_within + float((w * (means - pred) ** 2).sum())
    return 1.0 - sse / total


def fit_candidate(cand: Candidate, cells: Cells, seed: int = 0, role: str = "") -> ScalarFit | None:
    if len(cells) < 3 or cells.n.sum() == 0:
        return None
    f, k, n = cells.frame, cells.k, cells.n
    c_all, a_all, b_all, _ = _best_c(cand, f, k[None], n[None])
    c = float(c_all[0])
    x = np.log(cand(f, c))
    fit = logistic_fit(_design(x), k, n, max_iter=100)
    eta = _design(x) @ fit.coef
    accuracy = _sign_accuracy(eta, k, n)
    # leave one cell out, refitting c (and a, b) in every fold
    keep = 1.0 - np.eye(len(cells))
    c_cv, a_cv, b_cv, _ = _best_c(cand, f, keep * k[None], keep * n[None])
    grid = C_GRID if cand.free else (1.0,)
    by_c = {c_: np.log(cand(f, c_)) for c_ in grid}
    x_held = np.array([by_c[float(c_cv[i])][i] for i in range(len(cells))])
    eta_cv = a_cv + b_cv * x_held
    cv_accuracy = float(np.where(eta_cv > 0, k, n - k).sum() / n.sum())
    # nested full-factor model: the candidate plus every factor
    full_X = np.column_stack([_design(x), _varying_columns(full_factor_matrix(f))])
    full_X = _independent_columns(full_X)
    full = logistic_fit(full_X, k, n, max_iter=100)
    df_extra = full_X.shape[1] - 2
    lrt = max(2.0 * (full.loglik - fit.loglik), 0.0)
    lrt_p = chi2_sf(lrt, df_extra) if df_extra > 0 else math.nan
    # threshold interval: cluster bootstrap over cells, c held at its fitted value (the
    # threshold is on this scalar's scale)
    rng = derived_rng(seed, f"paper-threshold-{role}-{cand.key}")
    counts = np.stack([np.bincount(rng.integers(0, len(cells), len(cells)), minlength=len(cells)) for _ in range(BOOTSTRAP)]).astype(float)
    a_b, b_b, _ = logistic2_many(x, counts * k[None], counts * n[None])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = -a_b / b_b
    same_sign = b_b * fit.coef[1] > 0
    draws = np.where(same_sign & np.isfinite(z), z, np.nan)
    ok = draws[np.isfinite(draws)]
    if len(ok) >= 0.9 * BOOTSTRAP:
        interval = (math.exp(min(float(np.percentile(ok, 2.5)), 700.0)), math.exp(min(float(np.percentile(ok, 97.5)), 700.0)))
    else:  # the threshold is not identified in many resamples: say so with an unbounded interval
        interval = (0.0, math.inf)
    increasing = bool(fit.coef[1] >= 0)
    return ScalarFit(
        cand, c, fit.coef, fit.cov, fit.loglik, accuracy, cv_accuracy, _threshold(fit.coef), interval,
        lrt, df_extra, lrt_p, _isotonic_r2(x, cells, increasing, False), _isotonic_r2(x, cells, increasing, True),
        increasing, cand(f, c),
    )


def _varying_columns(X: np.ndarray) -> np.ndarray:
    keep = X.std(axis=0) > 1e-12
    return X[:, keep]


def _independent_columns(X: np.ndarray) -> np.ndarray:
    """Drop columns that are linear combinations of earlier ones (so df counts real terms)."""
    kept: list[int] = []
    for j in range(X.shape[1]):
        trial = X[:, kept + [j]]
        if np.linalg.matrix_rank(trial, tol=1e-8 * max(1.0, np.abs(trial).max())) == len(kept) + 1:
            kept.append(j)
    return X[:, kept]


@dataclass
class Ceiling:
    accuracy: float
    cv_accuracy: float
    loglik: float
    saturated_accuracy: float
    coef: dict[str, float]
    r2_cells: float  # share of the per-seed variance of the gain that cell means explain


def fit_ceiling(cells: Cells) -> Ceiling | None:
    if len(cells) < 3:
        return None
    f, k, n = cells.frame, cells.k, cells.n
    raw = full_factor_matrix(f)
    keep = raw.std(axis=0) > 1e-12
    names = [name for name, kept in zip(FULL_FACTORS, keep) if kept]
    X = np.column_stack([np.ones(len(cells)), raw[:, keep]])
    fit = logistic_fit(X, k, n)
    accuracy = _sign_accuracy(X @ fit.coef, k, n)
    hits = 0.0
    for i in range(len(cells)):
        mask = np.arange(len(cells)) != i
        fi = logistic_fit(X[mask], k[mask], n[mask], max_iter=50)
        hits += k[i] if X[i] @ fi.coef > 0 else n[i] - k[i]
    saturated = float(np.maximum(k, n - k).sum() / n.sum())
    fr = cells.frame
    w = fr["seeds"].to_numpy(dtype=float)
    means = fr["mean"].to_numpy(dtype=float)
    within = fr["ss"].to_numpy(dtype=float).sum()
    total = within + float((w * (means - np.average(means, weights=w)) ** 2).sum())
    return Ceiling(accuracy, float(hits / n.sum()), fit.loglik, saturated,
                   dict(zip(["intercept"] + names, map(float, fit.coef))), 1 - within / total if total > 0 else math.nan)


@dataclass
class ModeFits:
    mode: str
    cells: Cells
    fits: list[ScalarFit]
    ceiling: Ceiling | None

    @property
    def best(self) -> ScalarFit | None:
        """Highest cross-validated sign accuracy; ties go to the higher likelihood."""
        if not self.fits:
            return None
        return max(self.fits, key=lambda s: (round(s.cv_accuracy, 4), s.loglik))

    def get(self, key: str) -> ScalarFit | None:
        return next((s for s in self.fits if s.candidate.key == key), None)


def fit_all(df: pd.DataFrame, modes=((False, "fine-tuned"), (True, "frozen"))) -> dict[bool, ModeFits]:
    out = {}
    for frozen, mode in modes:
        cells = fit_cells(df, frozen)
        fits = [s for s in (fit_candidate(c, cells, role=mode) for c in CANDIDATES) if s is not None] if len(cells) else []
        out[frozen] = ModeFits(mode, cells, fits, fit_ceiling(cells) if len(cells) else None)
    return out


def families(values: np.ndarray, groups: np.ndarray, tolerance: float = FAMILY_TOLERANCE) -> np.ndarray:
    """Iso-scalar family labels (-1: none): within each group (the same target), cells are
    chained in order of the scalar while consecutive values differ by less than `tolerance`
    (relative), and a chain is a family when its ends differ by less than 2 x tolerance."""
    labels = np.full(len(values), -1)
    next_label = 0
    for g in pd.unique(groups):
        idx = np.where(groups == g)[0]
        order = idx[np.argsort(values[idx], kind="mergesort")]
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and values[order[end]] <= values[order[start]] * (1 + 2 * tolerance) and \
                    values[order[end]] <= values[order[end - 1]] * (1 + tolerance):
                end += 1
            if end - start >= 2:
                labels[order[start:end]] = next_label
                next_label += 1
            start = end
    return labels
