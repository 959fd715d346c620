"""The store's schema version: older stores are migrated in place, newer ones refused untouched.

The version-1 schema is written out here as literal SQL, exactly as ptbench 0.1.0 created
it, rather than imported from ptbench.results.store: the test must keep describing the stores that
exist in the wild even after the code that made them has changed.
"""

from __future__ import annotations

import multiprocessing
import platform
import sqlite3
from pathlib import Path

import pytest
import torch

from ptbench.api import RunResult
from ptbench.errors import PtbenchError
from ptbench.results.store import COLUMN_NAMES, SCHEMA_VERSION, Store

V1_DDL = [
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)",
    "INSERT INTO meta VALUES ('application', 'ptbench')",
    "CREATE TABLE runs (key TEXT PRIMARY KEY, task TEXT NOT NULL, task_params TEXT NOT NULL, "
    "strategy TEXT NOT NULL, strategy_params TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, "
    "error TEXT, source_acc REAL, target_acc REAL, target_train_acc REAL, source_seconds REAL, "
    "target_seconds REAL, device TEXT, diagnostics TEXT, ptbench_version TEXT, torch_version TEXT, "
    "git_commit TEXT, host TEXT, created_at TEXT)",
    "PRAGMA user_version = 1",
]

V1_ROW = {
    "key": 'signal-noise{"d": 100}|scratch{}|0',
    "task": "signal-noise[d=100]",
    "task_params": '{"d": 100}',
    "strategy": "scratch",
    "strategy_params": "{}",
    "seed": 0,
    "status": "ok",
    "error": None,
    "source_acc": 0.97,
    "target_acc": 0.81,
    "target_train_acc": 1.0,
    "source_seconds": 0.4,
    "target_seconds": 0.3,
    "device": "cpu",
    "diagnostics": '{"source": {"u_max_all": 1.5}}',
    "ptbench_version": "0.1.0",
    "torch_version": "2.2.0",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "host": "old-host",
    "created_at": "2025-01-01T00:00:00+0000",
}


def make_v1_store(path: Path) -> None:
    """A store exactly as schema 1 wrote it (rollback journal, as a v1 file copied around may
    well be), holding one run."""
    conn = sqlite3.connect(path)
    for statement in V1_DDL:
        conn.execute(statement)
    names = ", ".join(V1_ROW)
    conn.execute(f"INSERT INTO runs ({names}) VALUES ({', '.join('?' for _ in V1_ROW)})", list(V1_ROW.values()))
    conn.commit()
    conn.close()


def schema(path: Path) -> tuple[list[tuple[str, str]], set[str], int]:
    """(columns with types, index names, user_version) as SQLite itself reports them."""
    conn = sqlite3.connect(path)
    try:
        columns = [(row[1], row[2]) for row in conn.execute("PRAGMA table_info(runs)")]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return columns, indexes, version


def a_result(seed: int = 1) -> RunResult:
    return RunResult(
        task="signal-noise[d=100]", task_params={"d": 100}, strategy="full", strategy_params={"freeze": False},
        seed=seed, key=f'signal-noise{{"d": 100}}|full{{"freeze": false}}|{seed}', source_acc=0.9, target_acc=0.8,
    )


def test_a_version_1_store_is_migrated_and_keeps_its_runs(tmp_path):
    path = tmp_path / "old.db"
    make_v1_store(path)
    assert SCHEMA_VERSION >= 2

    with Store(path) as store:
        assert store.version() == SCHEMA_VERSION
        runs = store.frame()
        assert len(runs) == 1
        old = runs.iloc[0]
        for name, value in V1_ROW.items():
            if name in ("task_params", "strategy_params", "diagnostics"):
                continue
            assert old[name] == value, name
        assert old["diagnostics"] == {"source": {"u_max_all": 1.5}}
        assert old["task_params"] == {"d": 100}
        # the new provenance columns exist; the old run simply does not know them
        assert old["python_version"] is None and old["git_dirty"] is None
        store.write(a_result())  # and the migrated store takes new runs with the new columns

    columns, indexes, version = schema(path)
    assert version == SCHEMA_VERSION
    assert [name for name, _ in columns] == COLUMN_NAMES
    assert "runs_task_strategy" in indexes
    with Store(path) as store:  # opening again changes nothing
        runs = store.frame().set_index("seed")
        assert store.version() == SCHEMA_VERSION and len(store.statuses()) == 2
        assert runs.loc[1, "python_version"] == platform.python_version()
        assert runs.loc[1, "torch_version"] == torch.__version__
    assert schema(path) == (columns, indexes, version)


def test_a_fresh_store_has_the_same_schema_as_a_migrated_one(tmp_path):
    make_v1_store(tmp_path / "old.db")
    Store(tmp_path / "old.db").close()
    Store(tmp_path / "new.db").close()
    assert schema(tmp_path / "new.db") == schema(tmp_path / "old.db")


def test_a_store_from_a_newer_ptbench_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "future.db"
    make_v1_store(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(PtbenchError, match=r"newer ptbench .*upgrade ptbench"):
        Store(path)
    assert path.read_bytes() == before  # not even switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.db"]


def _open_and_write(path: str, seed: int, barrier) -> None:
    barrier.wait()
    with Store(path) as store:
        store.write(a_result(seed))


def test_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "old.db"
    make_v1_store(path)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_open_and_write, args=(str(path), seed, barrier)) for seed in range(1, 5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    columns, indexes, version = schema(path)
    assert version == SCHEMA_VERSION
    assert [name for name, _ in columns] == COLUMN_NAMES  # each new column added once
    with Store(path) as store:
        assert sorted(store.frame()["seed"]) == [0, 1, 2, 3, 4]
