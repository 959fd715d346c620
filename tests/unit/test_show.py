"""`ptbench show RUN`: one run's record, diagnostics and trajectories included; a RUN that
names no run, or several, is a user's mistake (exit 2)."""

from __future__ import annotations

import json

import pytest

PF = "partial-filters[fraction=0.5,freeze=False]"


@pytest.fixture
def store(cli, task_spec, tmp_path):
    path = tmp_path / "runs.db"
    res = cli("run", "--task", task_spec(steps=30, trace=10), "--strategy", "scratch", "--strategy", "partial-filters[fraction=0.5,freeze=false]",
              "--seeds", "2", "--store", str(path), "--no-leaderboard", "--quiet")
    assert res.code == 0, res.err
    return path


def test_show_prints_the_record_and_its_diagnostics(cli, store, task_spec):
    from ptbench.registry import default_registry
    from ptbench.spec import parse_spec

    name, fixed = parse_spec(task_spec(steps=30, trace=10))
    task = default_registry().task(name).expand(fixed)[0].instance_name
    res = cli("show", "--store", str(store), f"{task}|{PF}|1")
    assert res.code == 0, res.err
    out = res.out
    assert f"{task} | {PF} | seed 1" in out
    assert "status               ok" in out
    assert "target accuracy      test " in out and "source accuracy" in out
    assert "fraction=0.5, freeze=False" in out
    # the diagnostics table: one column per side, inherited/fresh rows for the target
    header = next(line for line in out.splitlines() if line.split() == ["source", "target"])
    assert header
    section = out.split("diagnostics (measured after training)", 1)[1].split("trajectory of", 1)[0]
    rows = {line.split()[0]: line.split()[1:] for line in section.splitlines() if line.startswith(("u_max", "noise"))}
    assert len(rows["u_max_all"]) == 2 and len(rows["u_max_inherited"]) == 1
    assert "trajectory of the target model: 4 records, steps 0 to 30" in out


def test_show_json_has_every_field_and_the_whole_trajectory(cli, store):
    res = cli("show", "--store", str(store), "--json", f"|{PF}|0")
    assert res.code == 0, res.err
    record = json.loads(res.out)
    assert record["seed"] == 0 and record["status"] == "ok" and record["strategy"] == PF
    assert 0.0 <= record["target_acc"] <= 1.0
    steps = [r["step"] for r in record["diagnostics"]["trajectory"]["target"]]
    assert steps == [0, 10, 20, 30]
    assert "u_max_inherited" in record["diagnostics"]["target"]


def test_show_accepts_the_exact_key(cli, store):
    from ptbench.results.store import open_existing

    with open_existing(store) as s:
        key = s.frame()["key"].iloc[0]
    res = cli("show", "--store", str(store), key)
    assert res.code == 0 and key in res.out


@pytest.mark.parametrize("query, message", [
    ("no-such-run", "no run matches 'no-such-run'"),
    ("|scratch|", "2 runs match '|scratch|'"),
])
def test_unknown_or_ambiguous_run_exits_2(cli, store, query, message):
    res = cli("show", "--store", str(store), query)
    assert res.code == 2
    assert message in res.err and "Traceback" not in res.err
    assert res.err.count("\n") == 1


def test_show_without_a_store_exits_2(cli, tmp_path):
    res = cli("show", "--store", str(tmp_path / "none.db"), "x")
    assert res.code == 2 and "no results store" in res.err


def test_parquet_export_keeps_the_diagnostics(cli, store, tmp_path):
    import pandas as pd

    out = tmp_path / "runs.parquet"
    res = cli("export", "--store", str(store), "--format", "parquet", "--out", str(out))
    assert res.code == 0, res.err
    table = pd.read_parquet(out)
    assert len(table) == 4 and set(table["strategy"]) == {"scratch", PF}
    row = table[(table["strategy"] == PF) & (table["seed"] == 1)].iloc[0]
    shown = json.loads(cli("show", "--store", str(store), "--json", f"|{PF}|1").out)
    assert json.loads(row["diagnostics"]) == shown["diagnostics"]
    assert row["target_acc"] == shown["target_acc"]
