"""The statistics the paper report's claims rest on, each held to scipy / statsmodels /
scikit-learn where they compute the same thing (skipped, with the reason, where one is absent):
exact t, chi-square and F tails, Holm and Benjamini-Hochberg, TOST, the one-way F test,
binomial logistic regression, isotonic regression; and the ones with no library twin
(Holm's step-down intervals, tie-aware incidence, derived generators) by their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptbench.results import stats


@pytest.fixture(scope="module")
def scipy_stats():
    return pytest.importorskip("scipy.stats", reason="scipy is the reference for the distributions")


@pytest.fixture(scope="module")
def multitest():
    return pytest.importorskip("statsmodels.stats.multitest", reason="statsmodels is the reference for the corrections")


@pytest.fixture(scope="module")
def weightstats():
    return pytest.importorskip("statsmodels.stats.weightstats", reason="statsmodels is the reference for TOST")


@pytest.fixture(scope="module")
def sm():
    return pytest.importorskip("statsmodels.api", reason="statsmodels is the reference for the logistic fit")


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 19, 30, 100])
@pytest.mark.parametrize("t", [-7.5, -2.1, -0.3, 0.0, 0.4, 1.96, 3.3, 12.0])
def test_t_tail_matches_scipy(t, df, scipy_stats):
    assert stats.t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-14)
    assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("df", [1, 4, 19, 60])
@pytest.mark.parametrize("q", [0.6, 0.975, 0.99975, 0.9999995, 0.01])
def test_t_quantile_matches_scipy_and_the_old_table(q, df, scipy_stats):
    assert stats.t_quantile(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-8)
    assert stats.t_quantile(0.975, df) == pytest.approx(stats.t_quantile_975(df), abs=2e-3)


@pytest.mark.parametrize("df", [1, 2, 7, 30])
@pytest.mark.parametrize("x", [0.0, 0.2, 1.0, 5.5, 40.0, 200.0])
def test_chi2_and_f_tails_match_scipy(x, df, scipy_stats):
    assert stats.chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-8, abs=1e-300)
    assert stats.f_sf(x, df, 3 * df + 2) == pytest.approx(scipy_stats.f.sf(x, df, 3 * df + 2), rel=1e-8, abs=1e-300)


def test_t_test_and_its_interval_match_scipy(scipy_stats):
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, 20)
    test = stats.t_test(x)
    ref = scipy_stats.ttest_1samp(x, 0.0)
    assert test.t == pytest.approx(ref.statistic) and test.p == pytest.approx(ref.pvalue)
    assert test.p_greater() == pytest.approx(scipy_stats.ttest_1samp(x, 0.0, alternative="greater").pvalue)
    low, high = scipy_stats.t.interval(0.99, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    interval = test.interval(0.99)
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
    # at 95% it is the interval mean_ci always gave (the table's quantile, to 1e-3)
    assert test.interval().low == pytest.approx(stats.mean_ci(x).low, abs=1e-3)
    assert stats.t_test([0.0, 0.0, 0.0]).p == 1.0 and math.isnan(stats.t_test([1.0]).p)


@pytest.mark.parametrize("seed", range(5))
def test_holm_and_bh_match_statsmodels(seed, multitest):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 30), rng.uniform(0, 0.002, 10), [0.01, 0.01, 1.0]])
    rng.shuffle(p)
    for method, ours in (("holm", stats.holm), ("fdr_bh", stats.benjamini_hochberg)):
        ref = multitest.multipletests(p, alpha=0.05, method=method)
        assert np.allclose(ours(p), ref[1])
        assert np.array_equal(ours(p) < 0.05, ref[0])
        assert np.allclose(stats.adjust(p, method), ref[1])


def test_corrections_leave_nan_out_of_the_family(multitest):
    p = [0.01, math.nan, 0.02, 0.04]
    assert np.allclose(stats.holm(p)[[0, 2, 3]], multitest.multipletests([0.01, 0.02, 0.04], method="holm")[1])
    assert math.isnan(stats.holm(p)[1]) and math.isnan(stats.benjamini_hochberg(p)[1])
    with pytest.raises(ValueError, match="unknown correction"):
        stats.adjust(p, "bonf")


def test_holm_step_down_intervals_exclude_zero_exactly_when_holm_rejects():
    rng = np.random.default_rng(3)
    tests = [stats.t_test(rng.normal(mu, 1.0, 20)) for mu in (0.0, 0.1, 0.45, 0.6, 0.8, 1.5, -0.9, -0.2)]
    intervals, adjusted, q = stats.corrected_intervals(tests)
    for interval, p in zip(intervals, adjusted):
        excludes = interval.low > 0 or interval.high < 0
        assert excludes == (p < 0.05)
    # each is wider than the 95% interval (a family of 8 is judged at alpha / k, k <= 8)
    for test, interval in zip(tests, intervals):
        assert interval.high - interval.low >= test.interval().high - test.interval().low - 1e-12
    assert np.all(q <= adjusted + 1e-12)  # BH is never more conservative than Holm


@pytest.mark.parametrize("mu, margin", [(0.0, 0.5), (0.3, 0.5), (0.45, 0.5), (-0.2, 0.3), (1.0, 0.5)])
def test_tost_matches_statsmodels(mu, margin, weightstats):
    rng = np.random.default_rng(11)
    x = rng.normal(mu, 0.6, 20)
    ours = stats.tost(x, margin)
    p, low, high = weightstats.DescrStatsW(x).ttost_mean(-margin, margin)
    assert ours.p == pytest.approx(p) and ours.p_low == pytest.approx(low[1]) and ours.p_high == pytest.approx(high[1])
    # the same decision as the 90% interval lying inside the margins
    inside = -margin < ours.test.interval(0.90).low and ours.test.interval(0.90).high < margin
    assert ours.shown() == inside


def test_tost_of_identical_values_and_of_one_value():
    assert stats.tost([0.0] * 5, 0.01).shown() and not stats.tost([0.02] * 5, 0.01).shown()
    assert not stats.tost([0.0], 0.01).shown()


def test_incidence_counts_one_example_as_a_tie():
    n_test = 2000
    deltas = np.array([-3, -2, -1, 0, 0, 1, 2, 5]) / n_test
    inc = stats.incidence(deltas, n_test)
    assert (inc.below, inc.ties, inc.above, inc.n) == (2, 4, 2, 8) and inc.fmt() == "2/4/2"
    assert stats.incidence(deltas, n_test, margin=0).ties == 2
    assert inc.negative.mean == pytest.approx(0.25)


def test_one_way_matches_scipy_and_estimates_the_between_sd(scipy_stats):
    rng = np.random.default_rng(5)
    groups = [rng.normal(mu, 1.0, 20) for mu in (0.0, 0.0, 0.5, 1.0)]
    ours = stats.one_way(groups)
    ref = scipy_stats.f_oneway(*groups)
    assert ours.f == pytest.approx(ref.statistic) and ours.p == pytest.approx(ref.pvalue)
    assert ours.within_sd == pytest.approx(1.0, rel=0.2) and 0.1 < ours.between_sd < 1.0
    same = stats.one_way([rng.normal(0, 1, 2000) for _ in range(4)])
    assert same.between_sd < 0.05 and same.p > 0.001


def test_binomial_logistic_fit_matches_statsmodels(sm):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 2))
    X = np.column_stack([np.ones(60), x])
    n = rng.integers(5, 21, 60).astype(float)
    k = rng.binomial(n.astype(int), 1 / (1 + np.exp(-(0.3 + 1.2 * x[:, 0] - 0.7 * x[:, 1])))).astype(float)
    ours = stats.logistic_fit(X, k, n)
    ref = sm.GLM(np.column_stack([k, n - k]), X, family=sm.families.Binomial()).fit()
    assert ours.converged
    assert np.allclose(ours.coef, ref.params, atol=1e-7)
    assert np.allclose(ours.cov, ref.cov_params(), rtol=1e-5)
    # statsmodels' llf adds the binomial coefficients; ours is the kernel: compare differences
    null = stats.logistic_fit(X[:, :1], k, n)
    ref_null = sm.GLM(np.column_stack([k, n - k]), X[:, :1], family=sm.families.Binomial()).fit()
    assert ours.loglik - null.loglik == pytest.approx(ref.llf - ref_null.llf, rel=1e-8)
    assert np.allclose(ours.predict(X), ref.predict(X))


def test_logistic_fit_on_separable_data_stops_without_crashing():
    X = np.column_stack([np.ones(6), np.arange(6.0)])
    fit = stats.logistic_fit(X, [0, 0, 0, 5, 5, 5], [5] * 6, max_iter=30)
    assert np.all(np.isfinite(fit.coef)) and (fit.predict(X)[3:] > 0.99).all()


def test_isotonic_matches_scikit_learn():
    isotonic_module = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(4)
    x = np.round(rng.uniform(0, 5, 80), 1)  # with ties
    y = np.sin(x) + x + rng.normal(0, 0.5, 80)
    w = rng.uniform(0.5, 2, 80)
    for increasing in (True, False):
        knots_x, knots_y = stats.isotonic(x, y if increasing else -y, w, increasing=increasing)
        ref = isotonic_module.IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(x, y if increasing else -y, sample_weight=w)
        grid = np.linspace(-1, 6, 50)
        assert np.allclose(stats.isotonic_predict(knots_x, knots_y, grid), ref.predict(grid))


def test_derived_generators_are_reproducible_and_differ_by_role():
    a = stats.derived_rng(0, "paper-bootstrap").integers(0, 10**9, 5)
    assert np.array_equal(a, stats.derived_rng(0, "paper-bootstrap").integers(0, 10**9, 5))
    assert not np.array_equal(a, stats.derived_rng(0, "other").integers(0, 10**9, 5))
    assert not np.array_equal(a, stats.derived_rng(1, "paper-bootstrap").integers(0, 10**9, 5))


def test_welch_and_its_tost_match_scipy_and_statsmodels(scipy_stats, weightstats):
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.0, 1.0, 15), rng.normal(0.4, 2.0, 25)
    ours = stats.welch(a, b)
    ref = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert ours.t == pytest.approx(ref.statistic) and ours.p == pytest.approx(ref.pvalue)
    p, low, high = weightstats.ttost_ind(b, a, -1.0, 1.0, usevar="unequal")
    assert stats.tost_test(ours, 1.0).p == pytest.approx(p)
