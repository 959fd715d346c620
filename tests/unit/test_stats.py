"""Statistics over seeds: t intervals, Wilson intervals, pairing by seed, the negative transfer
gap and ranks. Known values come from tables of Student's t and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ptbench.results.stats import (
    Interval,
    mean_ci,
    overall_ranks,
    paired_deltas,
    paired_to_baseline,
    summarize,
    t_quantile_975,
    wilson,
)


@pytest.mark.parametrize("df, expected", [(1, 12.706), (4, 2.776), (9, 2.262), (29, 2.045), (40, 2.0211), (60, 2.0003), (120, 1.9799)])
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=2e-4)


def test_mean_ci_is_the_student_t_interval():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)  # sd = sqrt(2.5), t(0.975, 4) = 2.776
    assert (ci.mean, ci.n) == (3.0, 5)
    assert ci.low == pytest.approx(3.0 - half, abs=1e-9)
    assert ci.high == pytest.approx(3.0 + half, abs=1e-9)
    assert ci.fmt(scale=1.0) == "3.0 [1.0, 5.0]"


def test_mean_ci_ignores_missing_values_and_degenerates_honestly():
    assert mean_ci([0.5, None, float("nan"), 0.7]).n == 2
    one = mean_ci([0.4])
    assert (one.mean, one.low, one.high, one.n) == (0.4, 0.4, 0.4, 1)
    assert one.fmt() == "40.0"  # no interval from one seed
    empty = mean_ci([])
    assert empty.n == 0 and empty.fmt() == "n/a"


@pytest.mark.parametrize("n", [5, 10, 40])
def test_wilson_at_zero_and_all(n):
    z2 = 1.959964**2
    none = wilson(0, n)
    assert none.mean == 0.0 and none.low == 0.0
    assert none.high == pytest.approx((z2 / n) / (1 + z2 / n), rel=1e-9)  # closed form at k = 0
    every = wilson(n, n)
    assert every.mean == 1.0 and every.high == 1.0
    assert every.low == pytest.approx(1 - none.high, rel=1e-9)  # symmetric


def test_wilson_in_between_matches_the_textbook_value():
    ci = wilson(3, 10)  # the usual worked example: [0.108, 0.603]
    assert (round(ci.low, 3), round(ci.high, 3)) == (0.108, 0.603)
    assert wilson(0, 0).n == 0


def test_interval_sign_checks():
    assert Interval(-0.02, -0.03, -0.01, 5).below_zero
    assert not Interval(-0.02, -0.05, 0.01, 5).below_zero
    assert Interval(0.02, 0.01, 0.03, 5).above_zero
    assert not Interval(-0.02, -0.02, -0.02, 1).below_zero  # one seed proves nothing


def _runs(rows):
    return pd.DataFrame(rows, columns=["task", "strategy", "seed", "target_acc"]).assign(
        status="ok", source_acc=0.9, target_seconds=0.1
    )


def test_paired_to_baseline_pairs_by_task_and_seed_not_by_row_order():
    runs = _runs([
        ("t", "scratch", 0, 0.70), ("t", "scratch", 1, 0.80), ("t", "scratch", 2, 0.60),
        ("t", "full", 2, 0.65), ("t", "full", 0, 0.72), ("t", "full", 1, 0.79),  # shuffled seeds
        ("u", "scratch", 0, 0.50), ("u", "full", 0, 0.40),
    ])
    paired = paired_to_baseline(runs, "scratch").set_index(["task", "strategy", "seed"])
    assert paired.loc[("t", "full", 2), "delta"] == pytest.approx(0.05)
    assert paired.loc[("t", "full", 0), "delta"] == pytest.approx(0.02)
    assert paired.loc[("t", "full", 1), "delta"] == pytest.approx(-0.01)
    assert paired.loc[("u", "full", 0), "delta"] == pytest.approx(-0.10)  # task u's own scratch


def test_baseline_may_be_an_instance_name():
    runs = _runs([
        ("t", "partial-filters[fraction=0.5]", 0, 0.7), ("t", "partial-filters[fraction=1.0]", 0, 0.6),
    ])
    paired = paired_to_baseline(runs, "partial-filters[fraction=0.5]").set_index("strategy")
    assert paired.loc["partial-filters[fraction=1.0]", "delta"] == pytest.approx(-0.1)


def test_paired_deltas_match_rows_on_the_given_columns():
    a = _runs([("t", "s", 0, 0.5), ("t", "s", 1, 0.6), ("t", "s", 2, 0.7)])
    b = _runs([("t", "s", 2, 0.9), ("t", "s", 0, 0.4), ("t", "s", 3, 1.0)])  # seed 3: no partner
    pairs = paired_deltas(a, b, ["task", "strategy", "seed"]).set_index("seed")
    assert sorted(pairs.index) == [0, 2]
    assert pairs.loc[0, "delta"] == pytest.approx(-0.1)
    assert pairs.loc[2, "delta"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="two runs"):
        paired_deltas(pd.concat([a, a]), b, ["task", "strategy", "seed"])


def test_ranks_share_ties_and_average_over_tasks():
    runs = _runs([
        ("t", "a", 0, 0.8), ("t", "b", 0, 0.8), ("t", "c", 0, 0.6),  # a and b tie on t
        ("u", "a", 0, 0.9), ("u", "b", 0, 0.5), ("u", "c", 0, 0.7),
    ])
    table = summarize(runs, "c").set_index(["task", "strategy"])
    assert [table.loc[("t", s), "rank"] for s in "abc"] == [1.5, 1.5, 3.0]
    assert [table.loc[("u", s), "rank"] for s in "abc"] == [1.0, 3.0, 2.0]
    ranks = overall_ranks(table.reset_index())
    assert list(ranks["strategy"]) == ["a", "b", "c"]
    assert list(ranks["mean_rank"]) == [1.25, 2.25, 2.5]
    assert np.all(ranks["tasks"] == 2)
