"""`ptbench compare`: two stores side by side (paired by task, strategy and seed), and two
strategies within one store (paired by task and seed), on stores with known numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ptbench.results.stats import mean_ci
from ptbench.results.store import Store

A_ACC = [0.80, 0.82, 0.84, 0.86, 0.88]
B_SHIFT = [0.01, 0.03, 0.02, 0.02, 0.02]  # B is 2 points better on average


def fill(path, rows, result):
    with Store(path) as store:
        for row in rows:
            store.write(result(**row))


def table_row(md: str, section: str, first_cell: str) -> list[str]:
    """The cells of the row starting with `first_cell` in the table under `section`."""
    part = md.split(section, 1)[1]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {section!r}:\n{md}")


@pytest.fixture
def two_stores(tmp_path, result):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    # B's rows are written in another seed order: pairing must go by seed, not by position
    fill(a, [dict(task="toy", strategy="full", seed=s, target_acc=acc) for s, acc in enumerate(A_ACC)]
         + [dict(task="toy", strategy="scratch", seed=s, target_acc=0.7) for s in range(5)], result)
    fill(b, [dict(task="toy", strategy="full", seed=s, target_acc=A_ACC[s] + B_SHIFT[s]) for s in reversed(range(5))]
         + [dict(task="toy", strategy="scratch", seed=s, target_acc=0.6) for s in range(4)]  # seed 4 missing
         + [dict(task="other", strategy="scratch", seed=0, target_acc=0.5)], result)
    return a, b


def test_two_stores_paired_by_task_strategy_and_seed(cli, two_stores):
    a, b = two_stores
    res = cli("compare", "--store", str(a), "--store", str(b))
    assert res.code == 0, res.err
    md = res.out
    full = table_row(md, "## `toy`", "`full`")
    expected = mean_ci(np.array(B_SHIFT))
    assert full[1] == mean_ci(A_ACC).fmt()
    assert full[2] == mean_ci(np.add(A_ACC, B_SHIFT)).fmt()
    assert full[3] == expected.fmt(signed=True) == "+2.0 [+1.1, +2.9]"
    assert full[4] == "5" and full[5] == "0/5" and full[6] == "higher"
    scratch = table_row(md, "## `toy`", "`scratch`")
    assert scratch[3] == "-10.0 [-10.0, -10.0]" and scratch[4] == "4" and scratch[5] == "4/4" and scratch[6] == "lower"
    assert "## `other`" not in md  # in B only: nothing to pair
    assert "Without a partner (left out): 1 run(s) of A, 1 of B." in md
    assert "B is higher in 1 and lower in 1" in md


def test_store_comparison_filters_and_other_metrics(cli, two_stores, tmp_path):
    a, b = two_stores
    res = cli("compare", "--store", str(a), "--store", str(b), "--strategy", "full", "--metric", "target_seconds",
              "--out", str(tmp_path / "cmp.md"))
    assert res.code == 0, res.err
    md = (tmp_path / "cmp.md").read_text()
    assert "`scratch`" not in md
    full = table_row(md, "## `toy`", "`full`")
    assert full[3] == "+0.000 [+0.000, +0.000]"  # both stores: 0.25 s per run


def test_two_strategies_in_one_store(cli, tmp_path, result):
    path = tmp_path / "s.db"
    pf = "partial-filters[fraction=0.5,freeze=False]"
    rows = []
    for task, base, gains in (("t1", 0.6, [0.05, 0.10, 0.15]), ("t2", 0.9, [-0.02, -0.04, -0.03])):
        for seed in (2, 0, 1):  # stored out of order
            rows.append(dict(task=task, strategy="scratch", seed=seed, target_acc=base + seed / 100))
            rows.append(dict(task=task, strategy=pf, seed=seed, target_acc=base + seed / 100 + gains[seed],
                             strategy_params={"fraction": 0.5, "freeze": False}))
        rows.append(dict(task=task, strategy="partial-filters[fraction=1.0,freeze=False]", seed=0, target_acc=0.1,
                         strategy_params={"fraction": 1.0, "freeze": False}))
    fill(path, rows, result)
    res = cli("compare", "--store", str(path), "--strategy", "scratch", "--strategy", "partial-filters[fraction=0.5]")
    assert res.code == 0, res.err
    t1 = table_row(res.out, "| task", "`t1`")
    assert t1[1] == "`scratch`" and t1[3] == f"`{pf}`"
    assert t1[5] == mean_ci([0.05, 0.10, 0.15]).fmt(signed=True) == "+10.0 [-2.4, +22.4]"
    assert t1[6] == "3" and t1[7] == "0/3" and t1[8] == "—"  # the interval straddles zero
    t2 = table_row(res.out, "| task", "`t2`")
    assert t2[5] == mean_ci([-0.02, -0.04, -0.03]).fmt(signed=True) and t2[7] == "3/3" and t2[8] == "lower"


def test_a_strategy_spec_must_pick_one_variant(cli, tmp_path, result):
    path = tmp_path / "s.db"
    fill(path, [dict(task="t", strategy="scratch", seed=0),
                dict(task="t", strategy="partial-filters[fraction=0.5]", seed=0, strategy_params={"fraction": 0.5}),
                dict(task="t", strategy="partial-filters[fraction=1.0]", seed=0, strategy_params={"fraction": 1.0})], result)
    res = cli("compare", "--store", str(path), "--strategy", "scratch", "--strategy", "partial-filters")
    assert res.code == 2
    assert re.search(r"matches 2 variants on task t: partial-filters\[fraction=0.5\], partial-filters\[fraction=1.0\]", res.err)
    res = cli("compare", "--store", str(path), "--strategy", "scratch", "--strategy", "nonesuch")
    assert res.code == 2 and "nonesuch" in res.err


@pytest.mark.parametrize("args, message", [
    (["--strategy", "scratch"], "exactly two --strategy"),
    (["--store", "x.db", "--store", "y.db", "--store", "z.db"], "one or two --store"),
    (["--store", "missing.db", "--strategy", "a", "--strategy", "b"], "no results store"),
])
def test_mistakes_exit_2_with_a_message(cli, args, message):
    res = cli("compare", *args)
    assert res.code == 2
    assert message in res.err and "Traceback" not in res.err
