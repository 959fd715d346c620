"""Names a user can type back (ptbench.results.query): the instance names the leaderboard
prints, and SPECs read by the grid rule, with candidates listed on ambiguity."""

from __future__ import annotations

import pytest

from ptbench.errors import PtbenchError
from ptbench.registry import default_registry
from ptbench.results.query import find_run, select_spec
from ptbench.results.store import Store

DIGITS = "digits-split[width=8,source_steps=200,target_steps=60]"
DIGITS_PARAMS = {"width": 8, "source_steps": 200, "target_steps": 60, "n_target": 10}
NOISE = "signal-noise[shared=2.0]"


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.fixture
def runs(tmp_path, result):
    rows = []
    for task, tparams in ((DIGITS, DIGITS_PARAMS), (NOISE, {"shared": 2.0, "d": 1000})):
        for strategy, sparams in (
            ("scratch", {}), ("full[freeze=False]", {"freeze": False}), ("full[freeze=True]", {"freeze": True}),
            ("partial-filters[fraction=0.5,freeze=False]", {"fraction": 0.5, "freeze": False}),
            ("partial-filters[fraction=0.5,freeze=True]", {"fraction": 0.5, "freeze": True}),
        ):
            for seed in (0, 1):
                rows.append(result(task, strategy, seed, task_params=tparams, strategy_params=sparams))
    with Store(tmp_path / "q.db") as store:
        for row in rows:
            store.write(row)
        return store.frame()


def test_the_readme_examples_name_one_run(runs, registry):
    run = find_run(runs, "digits-split|full|0", registry)
    assert (run["task"], run["strategy"], run["seed"]) == (DIGITS, "full[freeze=False]", 0)
    exact = find_run(runs, f"{DIGITS}|partial-filters[fraction=0.5,freeze=True]|1", registry)
    assert exact["strategy"] == "partial-filters[fraction=0.5,freeze=True]"
    assert find_run(runs, f"{NOISE}|scratch|1", registry)["seed"] == 1


def test_an_ambiguous_name_lists_the_candidates(runs, registry):
    with pytest.raises(PtbenchError, match=r"2 runs match 'full\|0': .*digits-split.*signal-noise.*give more"):
        find_run(runs, "full|0", registry)
    with pytest.raises(PtbenchError, match=r"no run matches 'nothing\|9'"):
        find_run(runs, "nothing|9", registry)


def test_a_spec_follows_the_grid_rule_then_reads_loosely(runs, registry):
    strict = runs[select_spec(runs, "strategy", "partial-filters[fraction=0.5]", registry)]
    assert set(strict["strategy"]) == {"partial-filters[fraction=0.5,freeze=False]"}  # freeze takes its default
    tasks = runs[select_spec(runs, "task", "digits-split", registry)]  # no task at defaults: any settings
    assert set(tasks["task"]) == {DIGITS}
    printed = runs[select_spec(runs, "strategy", "full[freeze=True]", registry)]
    assert set(printed["strategy"]) == {"full[freeze=True]"}


def test_compare_accepts_the_readme_pair(cli, runs, tmp_path):
    out = cli("compare", "--store", str(tmp_path / "q.db"), "--strategy", "full", "--strategy", "partial-filters[fraction=0.5]")
    assert out.code == 0, out.err
    assert "`full[freeze=False]`" in out.out and "`partial-filters[fraction=0.5,freeze=False]`" in out.out
