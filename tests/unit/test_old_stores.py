"""Results stored before the redesign still open: a schema-2 store holding several suites'
runs (the old single results/ptbench.db) migrates, loses nothing, and each suite's
leaderboard renders that suite's runs only."""

from __future__ import annotations

import json
import sqlite3

from ptbench.registry import default_registry
from ptbench.results.store import SCHEMA_VERSION, Store
from ptbench.results.suite_report import suite_runs
from ptbench.sweep.plan import expand, load_suite

V2_DDL = [
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)",
    "INSERT INTO meta VALUES ('application', 'ptbench')",
    "CREATE TABLE runs (key TEXT PRIMARY KEY, task TEXT NOT NULL, task_params TEXT NOT NULL, "
    "strategy TEXT NOT NULL, strategy_params TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, "
    "error TEXT, source_acc REAL, target_acc REAL, target_train_acc REAL, source_seconds REAL, "
    "target_seconds REAL, device TEXT, diagnostics TEXT, ptbench_version TEXT, torch_version TEXT, "
    "git_commit TEXT, host TEXT, created_at TEXT, python_version TEXT, git_dirty INTEGER)",
    "CREATE INDEX runs_task_strategy ON runs (task, strategy, seed)",
    "PRAGMA user_version = 2",
]


def _row(spec, acc):
    return (spec.key, spec.task.instance_name, json.dumps(spec.task.values), spec.strategy.instance_name,
            json.dumps(spec.strategy.values), spec.seed, "ok", None, 0.9, acc, 1.0, 0.1, 0.1, "cpu", "{}",
            "0.1.0", "2.2.0", "0" * 40, "old-host", "2026-01-01T00:00:00+0000", "3.11.7", 1)


def test_a_schema_2_store_of_two_suites_migrates_and_renders_each_suite_apart(tmp_path, cli):
    registry = default_registry()
    smoke = expand(load_suite("smoke"), registry)
    adhoc = expand(load_suite("smoke"), registry, tasks=["signal-noise[d=60,m=4,n_source=20,n_target=10,n_test=50,steps=5]"])
    path = tmp_path / "ptbench.db"
    conn = sqlite3.connect(path)
    for statement in V2_DDL:
        conn.execute(statement)
    for i, spec in enumerate(smoke + adhoc):
        conn.execute(f"INSERT INTO runs VALUES ({', '.join('?' * 22)})", _row(spec, 0.5 + i / 100))
    conn.commit()
    conn.close()

    with Store(path) as store:
        assert store.version() == SCHEMA_VERSION
        runs = store.frame()
    assert len(runs) == len(smoke) + len(adhoc)  # nothing lost
    assert runs["plugin_hash"].isna().all()  # from before code was recorded
    mine = suite_runs(runs, smoke)
    assert sorted(mine["key"]) == sorted(s.key for s in smoke)

    out = cli("leaderboard", "--suite", "smoke", "--store", str(path), "--out", str(tmp_path / "lb"))
    assert out.code == 0, out.err
    page = (tmp_path / "lb" / "README.md").read_text()
    assert f"{len(smoke)} runs ({len(smoke)} ok) over 1 task" in page and "d=60" not in page
