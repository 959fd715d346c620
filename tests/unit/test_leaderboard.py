"""The leaderboard's numbers, from a store whose accuracies are known: means, intervals,
paired differences to scratch, negative-transfer counts, the overall ranking."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ptbench.results.leaderboard import render, write
from ptbench.results.stats import mean_ci, overall_ranks, paired_to_baseline, summarize, t_quantile_975, wilson
from ptbench.results.store import Store, open_existing

T975_DF3 = 3.182  # two-sided 95% Student t quantile, 3 degrees of freedom (4 seeds)
GOOD = "partial-filters[fraction=0.5]"
ACCS = {
    "toy": {
        "scratch": [0.80, 0.82, 0.78, 0.80],
        GOOD: [0.90, 0.85, 0.88, 0.79],  # helps on 3 seeds of 4
        "full": [0.70, 0.75, 0.70, 0.77],  # hurts on every seed
    },
    "toy2": {
        "scratch": [0.60, 0.62, 0.64, 0.66],
        "full": [0.50, 0.52, 0.54, 0.56],
    },
}


@pytest.fixture
def store_path(tmp_path, result):
    path = tmp_path / "lb.db"
    with Store(path) as store:
        for task, strategies in ACCS.items():
            for strategy, accs in strategies.items():
                for seed, acc in enumerate(accs):
                    store.write(result(task=task, strategy=strategy, seed=seed, target_acc=acc, source_acc=0.95,
                                       target_seconds=0.5 + seed))
        store.write(result(task="toy", strategy="full", seed=4, status="failed", target_acc=None,
                           error="RuntimeError: the loss exploded"))
    return path


@pytest.fixture
def runs(store_path):
    with open_existing(store_path) as store:
        return store.frame()


def expected_ci(values):
    x = np.array(values)
    half = T975_DF3 * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def pct(mean, low, high, signed=False):
    s = "+" if signed else ""
    return f"{mean * 100:{s}.1f} [{low * 100:{s}.1f}, {high * 100:{s}.1f}]"


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The pipe table under `heading`, as strategy -> cells."""
    section = markdown.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
        elif line.startswith("|") and cells[1].startswith("`"):  # ranking table: # first
            rows[cells[1].strip("`")] = cells
    return rows


def incidence(cell: str) -> tuple[int, int]:
    """(k, n) from a negative-transfer cell, which starts with k/n."""
    match = re.match(r"(\d+)/(\d+)\b", cell)
    assert match, cell
    return int(match.group(1)), int(match.group(2))


def test_summary_numbers(runs):
    table = summarize(runs, "scratch").set_index(["task", "strategy"])
    good = table.loc[("toy", GOOD)]
    mean, low, high = expected_ci(ACCS["toy"][GOOD])
    assert good["acc"].mean == pytest.approx(mean)
    assert (good["acc"].low, good["acc"].high) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))
    deltas = np.subtract(ACCS["toy"][GOOD], ACCS["toy"]["scratch"])
    d_mean, d_low, d_high = expected_ci(deltas)
    assert good["delta"].mean == pytest.approx(d_mean)
    assert good["delta"].low == pytest.approx(d_low, abs=1e-4)
    assert good["delta"].high == pytest.approx(d_high, abs=1e-4)
    assert (good["negative_k"], good["negative"].n) == (1, 4)
    assert good["seeds"] == 4
    full = table.loc[("toy", "full")]
    assert (full["negative_k"], full["negative"].n, full["seeds"]) == (4, 4, 4)  # the failed seed is left out
    assert full["seconds"] == pytest.approx(np.mean([0.5, 1.5, 2.5, 3.5]))
    scratch = table.loc[("toy", "scratch")]
    assert scratch["delta"].mean == 0.0 and scratch["negative_k"] == 0
    assert [table.loc[("toy", s)]["rank"] for s in (GOOD, "scratch", "full")] == [1.0, 2.0, 3.0]


def test_markdown_shows_the_numbers(runs):
    md = render(runs, "scratch")
    toy = table_rows(md, "## `toy`")
    assert list(toy) == [GOOD, "scratch", "full"]  # best first
    good = toy[GOOD]
    assert good[1] == pct(*expected_ci(ACCS["toy"][GOOD]))
    assert good[2] == pct(*expected_ci(np.subtract(ACCS["toy"][GOOD], ACCS["toy"]["scratch"])), signed=True)
    assert incidence(good[3]) == (1, 4)
    assert good[4] == "95.0 [95.0, 95.0]"  # source accuracy, the same model for every strategy
    assert good[6] == "4"
    assert incidence(toy["full"][3]) == (4, 4)
    assert incidence(toy["scratch"][3]) == (0, 4)
    assert toy["scratch"][2] == "+0.0 [+0.0, +0.0]"
    assert "Δ vs scratch" in md
    assert "21 runs (20 ok) over 2 tasks" in md


def test_overall_ranking_order(runs):
    table = summarize(runs, "scratch")
    ranks = overall_ranks(table)
    # GOOD ran on 1 of the 2 tasks: its mean rank is not comparable, so it sorts apart
    assert ranks["strategy"].tolist() == ["scratch", "full", GOOD]
    assert ranks["mean_rank"].tolist() == [1.5, 2.5, 1.0]
    assert ranks["tasks"].tolist() == [2, 2, 1]
    assert ranks["complete"].tolist() == [True, True, False]
    md = render(runs, "scratch")
    ranking = table_rows(md, "## Overall ranking")
    assert list(ranking) == ["scratch", "full", GOOD]
    assert ranking["scratch"] == ["1", "`scratch`", "1.50", "2"]
    assert ranking[GOOD] == ["–", f"`{GOOD}`", "1.00", "1"]
    assert "Only strategies run on all 2 tasks are ranked" in md


def test_failed_runs_are_listed_not_counted(runs):
    md = render(runs, "scratch")
    assert "## Failed runs" in md
    failed = md.split("## Failed runs", 1)[1]
    assert "the loss exploded" in failed and "`full`" in failed


def test_another_baseline(runs):
    md = render(runs, "full")
    toy = table_rows(md, "## `toy`")
    assert "Δ vs full" in md
    assert incidence(toy["scratch"][3]) == (0, 4)  # scratch beats full on every seed
    assert toy["full"][2] == "+0.0 [+0.0, +0.0]"


def test_empty_store_says_how_to_fill_it(tmp_path):
    with Store(tmp_path / "empty.db") as store:
        md = render(store.frame())
    assert "No runs in the store yet" in md


def test_cli_writes_the_leaderboard(store_path, tmp_path, cli):
    res = cli("leaderboard", "--store", str(store_path), "--out", str(tmp_path / "board"))
    assert res.code == 0, res.err
    readme = tmp_path / "board" / "README.md"
    assert res.out.strip() == str(readme)
    with open_existing(store_path) as store:
        page = render(store.frame(), "scratch", title=f"ptbench leaderboard: {store_path}")
    assert readme.read_text().startswith(page.rstrip("\n") + "\n\n<!-- ptbench results digest: ")
    again = cli("leaderboard", "--store", str(store_path), "--out", str(tmp_path / "board"))
    assert again.code == 0 and "unchanged: same results" in again.out


def test_write_creates_the_folder(runs, tmp_path):
    path, written = write(runs, tmp_path / "a" / "b")
    assert written and path.read_text().startswith("# ptbench leaderboard")


# --------------------------------------------------------------------------- statistics


def test_unpaired_runs_get_no_delta(result):
    import pandas as pd
    from dataclasses import asdict

    rows = [result(strategy="scratch", seed=0, target_acc=0.5), result(strategy="full", seed=0, target_acc=0.7),
            result(strategy="full", seed=1, target_acc=0.9)]
    runs = pd.DataFrame([asdict(r) for r in rows])
    paired = paired_to_baseline(runs, "scratch").set_index(["strategy", "seed"])
    assert paired.loc[("full", 0), "delta"] == pytest.approx(0.2)
    assert math.isnan(paired.loc[("full", 1), "delta"])
    summary = summarize(runs, "scratch").set_index("strategy")
    assert summary.loc["full", "acc"].n == 2 and summary.loc["full", "negative"].n == 1


def test_interval_helpers():
    assert mean_ci([0.5]).fmt() == "50.0"
    assert mean_ci([]).fmt() == "n/a"
    assert mean_ci([0.2, float("nan"), None, 0.4]).n == 2
    low, high = wilson(1, 4).low, wilson(1, 4).high
    assert (low, high) == (pytest.approx(0.0456, abs=1e-3), pytest.approx(0.6994, abs=1e-3))
    assert wilson(0, 10).low == 0.0 and wilson(0, 10).high > 0.2
    assert wilson(10, 10).high == pytest.approx(1.0) and wilson(10, 10).low == pytest.approx(0.7225, abs=1e-3)
    assert t_quantile_975(3) == T975_DF3
    assert t_quantile_975(40) == pytest.approx(2.0211, abs=1e-3)
    assert t_quantile_975(100) == pytest.approx(1.9840, abs=1e-3)
