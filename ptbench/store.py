"""The results store: one SQLite row per run, keyed by (task, strategy, seed) identity.

SQLite because a sweep killed at any moment must keep every run that finished (each run is
committed on its own), because several `ptbench run` processes may share one store (WAL mode,
a busy timeout, and a primary key that makes a second write of the same run a replacement,
never a duplicate), and because a single file is easy to pass around and `compare`.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from .api import RunResult
from .errors import PtbenchError

SCHEMA_VERSION = 1
APPLICATION = "ptbench"

COLUMNS = [
    ("key", "TEXT PRIMARY KEY"),
    ("task", "TEXT NOT NULL"),
    ("task_params", "TEXT NOT NULL"),
    ("strategy", "TEXT NOT NULL"),
    ("strategy_params", "TEXT NOT NULL"),
    ("seed", "INTEGER NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("error", "TEXT"),
    ("source_acc", "REAL"),
    ("target_acc", "REAL"),
    ("target_train_acc", "REAL"),
    ("source_seconds", "REAL"),
    ("target_seconds", "REAL"),
    ("device", "TEXT"),
    ("diagnostics", "TEXT"),
    ("ptbench_version", "TEXT"),
    ("torch_version", "TEXT"),
    ("git_commit", "TEXT"),
    ("host", "TEXT"),
    ("created_at", "TEXT"),
]
COLUMN_NAMES = [name for name, _ in COLUMNS]
JSON_COLUMNS = ("task_params", "strategy_params", "diagnostics")


@lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    """What produced a result: versions, the git commit of the checkout if any, the host."""
    from . import __version__

    commit = None
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "ptbench_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": commit,
        "host": platform.node(),
    }


class Store:
    """An open results database."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise PtbenchError(f"no results store at {str(self.path)!r}; run `python -m ptbench run --store {self.path}` first")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self._init_schema()
        except sqlite3.DatabaseError as err:
            raise PtbenchError(
                f"{str(self.path)!r} is not a ptbench results store ({err}); pass another --store path"
            ) from None
        except OSError as err:
            raise PtbenchError(f"cannot write the store {str(self.path)!r}: {err.strerror}; pass a writable --store path") from None

    def _init_schema(self) -> None:
        tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if not tables:
                    self.conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
                    self.conn.execute("INSERT INTO meta VALUES ('application', ?)", (APPLICATION,))
                    self.conn.execute(f"CREATE TABLE runs ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
                    self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return
        app = None
        if "meta" in tables:
            row = self.conn.execute("SELECT value FROM meta WHERE name='application'").fetchone()
            app = row[0] if row else None
        if app != APPLICATION or "runs" not in tables:
            raise PtbenchError(f"{str(self.path)!r} is an SQLite database but not a ptbench results store; pass another --store path")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise PtbenchError(
                f"{str(self.path)!r} was written by a newer ptbench (schema {version}, this one reads {SCHEMA_VERSION}); upgrade ptbench"
            )

    # -- writing ---------------------------------------------------------------------------
    def write(self, result: RunResult) -> None:
        """Store one run, replacing an earlier row of the same run; committed at once."""
        row = asdict(result)
        row.update(provenance())
        row["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for name in JSON_COLUMNS:
            row[name] = json.dumps(row.get(name) or {}, sort_keys=True)
        values = [row.get(name) for name in COLUMN_NAMES]
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        self.conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})", values)

    # -- reading ---------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, status FROM runs"))

    def frame(self) -> pd.DataFrame:
        """Every run as a DataFrame, JSON columns decoded."""
        df = pd.read_sql_query(f"SELECT {', '.join(COLUMN_NAMES)} FROM runs ORDER BY task, strategy, seed", self.conn)
        for name in JSON_COLUMNS:
            df[name] = df[name].map(lambda s: json.loads(s) if s else {})
        return df

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_existing(path: str | Path) -> Store:
    return Store(path, create=False)


def export_frame(df: pd.DataFrame, fmt: str, out: str | Path | None) -> str | None:
    """Write runs as csv, json or parquet; returns the text when `out` is None (csv/json)."""
    flat = df.copy()
    for name in JSON_COLUMNS:
        flat[name] = flat[name].map(lambda v: json.dumps(v, sort_keys=True))
    if fmt == "csv":
        text = flat.to_csv(index=False)
    elif fmt == "json":
        text = json.dumps(
            [{**rec, **{n: json.loads(rec[n]) for n in JSON_COLUMNS}} for rec in flat.to_dict(orient="records")],
            indent=1,
        )
    elif fmt == "parquet":
        if out is None:
            raise PtbenchError("--format parquet needs --out FILE")
        try:
            flat.to_parquet(out, index=False)
        except ImportError:
            raise PtbenchError("--format parquet needs pyarrow: pip install pyarrow") from None
        return None
    else:
        raise PtbenchError(f"unknown export format {fmt!r}; valid: csv, json, parquet")
    if out is None:
        return text
    Path(out).write_text(text)
    return None


def iter_ok(df: pd.DataFrame) -> Iterable[pd.DataFrame]:
    return df[df["status"] == "ok"]
