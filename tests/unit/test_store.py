"""The SQLite results store: round trip, replacement, refusal of foreign files, resume."""

from __future__ import annotations

import io
import json
import math
import re
import sqlite3

import pandas as pd
import pytest
import torch

from ptbench.errors import PtbenchError
from ptbench.run.options import RunOptions
from ptbench.results.store import COLUMN_NAMES, SCHEMA_VERSION, Store, export_frame, open_existing
from ptbench.sweep.plan import expand, parse_suite
from ptbench.sweep.sweep import run_sweep


def test_round_trip_decodes_json_columns(tmp_path, result):
    diagnostics = {"source": {"u_max_all": 1.5}, "target": {"noise_all": 0.25}, "trajectory": {"source": [{"step": 0}]}}
    rows = [
        result(strategy="scratch", seed=0, target_acc=0.75, task_params={"d": 100, "shared": 2.0, "target_specific": None}),
        result(strategy="partial-filters[fraction=0.5]", seed=1, target_acc=0.5,
               strategy_params={"fraction": 0.5, "freeze": True}, diagnostics=diagnostics),
        result(strategy="full", seed=0, status="failed", error="RuntimeError: boom", target_acc=None, target_train_acc=None),
    ]
    with Store(tmp_path / "r.db") as store:
        for row in rows:
            store.write(row)
    with open_existing(tmp_path / "r.db") as store:
        df = store.frame()
        assert len(store.statuses()) == 3
    assert list(df.columns) == COLUMN_NAMES
    by_key = df.set_index("key")
    scratch = by_key.loc["toy|scratch|0"]
    assert scratch["task_params"] == {"d": 100, "shared": 2.0, "target_specific": None}
    assert scratch["strategy_params"] == {}
    assert scratch["diagnostics"] == {}
    assert scratch["target_acc"] == 0.75 and scratch["seed"] == 0
    partial = by_key.loc["toy|partial-filters[fraction=0.5]|1"]
    assert partial["strategy_params"] == {"fraction": 0.5, "freeze": True}
    assert partial["diagnostics"] == diagnostics
    failed = by_key.loc["toy|full|0"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert math.isnan(failed["target_acc"])
    # provenance travels with every row
    assert set(df["torch_version"]) == {torch.__version__}
    assert all(re.match(r"\d{4}-\d\d-\d\dT", c) for c in df["created_at"])


def test_writing_a_run_again_replaces_it(tmp_path, result):
    with Store(tmp_path / "r.db") as store:
        store.write(result(target_acc=0.5))
        store.write(result(target_acc=0.625))
        assert len(store.statuses()) == 1
        assert store.frame()["target_acc"].tolist() == [0.625]
        assert store.statuses() == {"toy|scratch|0": "ok"}


def test_two_connections_share_one_store(tmp_path, result):
    a, b = Store(tmp_path / "r.db"), Store(tmp_path / "r.db")
    try:
        a.write(result(seed=0))
        b.write(result(seed=1))
        assert len(a.statuses()) == len(b.statuses()) == 2
    finally:
        a.close()
        b.close()


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'ada')")
    conn.commit()
    conn.close()
    with pytest.raises(PtbenchError, match="not a ptbench results store"):
        Store(path)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert tables == {"customers"}
    assert journal == "delete"  # not switched to WAL either


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(PtbenchError, match="not a ptbench results store"):
        Store(path)


def test_a_newer_schema_is_refused(tmp_path, result):
    path = tmp_path / "r.db"
    with Store(path) as store:
        store.write(result())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(PtbenchError, match="newer ptbench"):
        Store(path)


def test_a_missing_store_is_not_created_when_reading(tmp_path):
    with pytest.raises(PtbenchError, match="no results store"):
        open_existing(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_export_formats(tmp_path, result):
    with Store(tmp_path / "r.db") as store:
        store.write(result(strategy_params={"fraction": 0.5}))
        df = store.frame()
    csv_text = export_frame(df, "csv", None)
    back = pd.read_csv(io.StringIO(csv_text))
    assert json.loads(back.loc[0, "strategy_params"]) == {"fraction": 0.5}
    records = json.loads(export_frame(df, "json", None))
    assert records[0]["strategy_params"] == {"fraction": 0.5}
    out = tmp_path / "r.parquet"
    assert export_frame(df, "parquet", out) is None
    assert pd.read_parquet(out)["target_acc"].tolist() == [0.8]
    with pytest.raises(PtbenchError, match="needs --out"):
        export_frame(df, "parquet", None)


# --------------------------------------------------------------------------- resume


@pytest.fixture
def specs(registry, task_spec):
    suite = parse_suite(
        {"seeds": 2, "tasks": [task_spec(steps=50)], "strategies": ["scratch", "full"]}, "t", "t.toml"
    )
    return expand(suite, registry)


def test_sweep_resumes_forces_and_retries(tmp_path, specs):
    with Store(tmp_path / "r.db") as store:
        first = run_sweep(specs, store, RunOptions(), progress=False)
        assert (first.ran, first.skipped, first.failed) == (4, 0, 0)
        rows = store.frame().drop(columns=["created_at", "load_1min"])  # read at each write, like the time

        again = run_sweep(specs, store, RunOptions(), progress=False)
        assert (again.ran, again.skipped) == (0, 4)
        assert "0 run(s) done, 4 already stored" in again.summary()

        forced = run_sweep(specs, store, RunOptions(), force=True, progress=False)
        assert (forced.ran, forced.skipped) == (4, 0)
        assert len(store.statuses()) == 4
        redone = store.frame().drop(columns=["created_at", "load_1min", "source_seconds", "target_seconds"])
        pd.testing.assert_frame_equal(redone, rows.drop(columns=["source_seconds", "target_seconds"]))

        # a stored failure is skipped by a plain resume and re-run by --retry-failed
        store.conn.execute("UPDATE runs SET status='failed', target_acc=NULL WHERE key=?", (specs[0].key,))
        assert run_sweep(specs, store, RunOptions(), progress=False).ran == 0
        retried = run_sweep(specs, store, RunOptions(), retry_failed=True, progress=False)
        assert (retried.ran, retried.skipped) == (1, 3)
        assert set(store.statuses().values()) == {"ok"}


def test_cli_run_twice_skips_stored_runs_and_force_reruns(tmp_path, cli, task_spec):
    args = ["run", "--task", task_spec(steps=50), "--strategy", "scratch", "--strategy", "partial-filters[fraction=0.5,freeze=true]",
            "--seeds", "1", "--store", str(tmp_path / "r.db"), "--leaderboard", str(tmp_path / "lb"), "--quiet", "--device", "cpu"]
    first = cli(*args)
    assert first.code == 0, first.err
    assert "2 run(s) done, 0 already stored" in first.err
    second = cli(*args)
    assert second.code == 0
    assert "0 run(s) done, 2 already stored" in second.err
    forced = cli(*args, "--force")
    assert "2 run(s) done, 0 already stored" in forced.err
    with open_existing(tmp_path / "r.db") as store:
        assert len(store.statuses()) == 2
    assert (tmp_path / "lb" / "README.md").is_file()


def test_cli_run_refuses_a_foreign_store(tmp_path, cli, task_spec):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    res = cli("run", "--task", task_spec(steps=10), "--strategy", "scratch", "--seeds", "1",
              "--store", str(path), "--no-leaderboard", "--quiet", "--device", "cpu")
    assert res.code == 2
    assert "not a ptbench results store" in res.err
    assert len(res.err.strip().splitlines()) == 1
