"""The results store: one SQLite row per run, keyed by (task, strategy, seed) identity.

SQLite because a sweep killed at any moment must keep every run that finished (each run is
committed on its own), because several `ptbench run` processes may share one store (WAL mode,
a busy timeout, and a primary key that makes a second write of the same run a replacement,
never a duplicate), and because a single file is easy to pass around and `compare`.

The store carries its schema version (SQLite's user_version, plus an `application` row in
`meta` that tells a ptbench store from any other SQLite file). Opening an older store applies
MIGRATIONS in one transaction; a store from a newer ptbench is refused, never altered.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

from ptbench.api import RunResult
from ptbench.errors import PtbenchError

SCHEMA_VERSION = 3
APPLICATION = "ptbench"

#: The runs table as schema 1 created it. Frozen: a new store is created at schema 1 and
#: brought forward by MIGRATIONS, so a fresh store and a migrated one cannot drift apart.
V1_COLUMNS = [
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


@dataclass(frozen=True)
class Migration:
    """Schema `version - 1` -> `version`. Only nullable columns and indexes are added, so an
    older ptbench still writing to the store (its INSERT names its own columns) keeps working
    while it runs; a newer one refuses to open a store from the future."""

    version: int
    why: str
    columns: tuple[tuple[str, str], ...] = ()
    statements: tuple[str, ...] = ()


MIGRATIONS: list[Migration] = [
    Migration(
        version=2,
        why="provenance a leaderboard can trust: the Python version, and whether the checkout "
        "had uncommitted changes (a commit alone does not say what ran); an index for per-task reads",
        columns=(("python_version", "TEXT"), ("git_dirty", "INTEGER")),
        statements=("CREATE INDEX IF NOT EXISTS runs_task_strategy ON runs (task, strategy, seed)",),
    ),
    Migration(
        version=3,
        why="results that know their code: a digest of the task's and strategy's plugin modules "
        "(a run made by other code is re-run, not reported as current), and the training path "
        "the run took (batched engine or per-run loop)",
        columns=(("plugin_hash", "TEXT"), ("path", "TEXT")),
    ),
]
assert [m.version for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1)), "migrations must be consecutive"

COLUMNS = V1_COLUMNS + [column for m in MIGRATIONS for column in m.columns]
COLUMN_NAMES = [name for name, _ in COLUMNS]
JSON_COLUMNS = ("task_params", "strategy_params", "diagnostics")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


#: What ptbench itself writes inside a checkout: these never make a run "dirty".
OWN_OUTPUTS = ("leaderboard", "results", ".ptbench-cache")


@lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    """What produced a result: versions, the git state of ptbench's own checkout, the host.

    The commit is only taken when ptbench itself is the checkout's top level (an editable
    install), never from some unrelated repository an installed ptbench happens to sit in.
    `git_dirty` says whether tracked files other than ptbench's own outputs (OWN_OUTPUTS:
    the leaderboards it writes, its results and cache) differ from the commit.
    """
    from ptbench import __version__

    commit = dirty = None
    here = Path(__file__).resolve().parents[1]  # the ptbench package folder
    top = _git(["rev-parse", "--show-toplevel"], here)
    if top is not None and Path(top).resolve() == here.parent:
        commit = _git(["rev-parse", "HEAD"], here)
        excluded = [f":(exclude){name}" for name in OWN_OUTPUTS]
        status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".", *excluded], Path(top))
        dirty = None if commit is None or status is None else int(bool(status))
    return {
        "ptbench_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "host": platform.node(),
    }


def _jsonable(value: Any) -> Any:
    """Tensors and numpy values in diagnostics become numbers and lists; anything else is
    refused (TypeError), so that the sweep stores that run as failed instead of guessing."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable (diagnostics hold numbers, strings, lists and dicts)")


def encode_json(value: Any) -> str:
    return json.dumps(value or {}, sort_keys=True, default=_jsonable)


def _unwritable_reason(path: Path, err: OSError) -> str:
    """Why a store path cannot be created, in the user's terms."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return f"{str(parent)!r} is a file, not a folder"
    return err.strerror or str(err)


class Store:
    """An open results database."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        where = repr(str(self.path))
        if not create and not self.path.is_file():
            raise PtbenchError(f"no results store at {where}; run `python -m ptbench run --store {self.path}` first")
        if self.path.is_dir():
            raise PtbenchError(f"--store {where} is a folder; give a file path such as {str(self.path / 'ptbench.db')!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PtbenchError(
                f"cannot write the store {where}: {_unwritable_reason(self.path, err)}; pass a --store path in a writable folder"
            ) from None
        self.conn: sqlite3.Connection | None = None
        try:
            self._open_retrying_locks()
        except sqlite3.OperationalError as err:  # cannot open, read-only, locked for a minute
            self.close()
            raise PtbenchError(f"cannot use the store {where} ({err}); pass a writable --store path") from None
        except sqlite3.DatabaseError as err:  # not a database at all, or a damaged one
            self.close()
            raise PtbenchError(f"{where} is not a ptbench results store ({err}); pass another --store path") from None
        except PtbenchError:
            self.close()
            raise

    def _open_retrying_locks(self, patience: float = 60.0) -> None:
        """Connect and create/check/migrate the schema. Switching a store to WAL needs an
        exclusive lock, and SQLite answers "database is locked" at once, without its busy
        handler, when processes open a new or old store together; so retry for a while."""
        deadline = time.monotonic() + patience
        while True:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            try:
                self._init_schema()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                self.close()
                time.sleep(0.05)

    def _init_schema(self) -> None:
        """Create, check or migrate. Nothing is changed in a file that turns out not to be a
        ptbench store of this schema or an older one (not even its journal mode)."""
        tables = self._tables()
        if not tables:
            self.conn.execute("PRAGMA journal_mode = WAL")
            with self._transaction():
                if not self._tables():  # another process may have created it meanwhile
                    self.conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
                    self.conn.execute("INSERT INTO meta VALUES ('application', ?)", (APPLICATION,))
                    self.conn.execute(f"CREATE TABLE runs ({', '.join(f'{n} {t}' for n, t in V1_COLUMNS)})")
                    self.conn.execute("PRAGMA user_version = 1")
                    self._migrate_locked()
            return
        app = None
        if "meta" in tables:
            row = self.conn.execute("SELECT value FROM meta WHERE name='application'").fetchone()
            app = row[0] if row else None
        if app != APPLICATION or "runs" not in tables:
            raise PtbenchError(f"{str(self.path)!r} is an SQLite database but not a ptbench results store; pass another --store path")
        version = self.version()
        if version > SCHEMA_VERSION:
            raise PtbenchError(
                f"{str(self.path)!r} was written by a newer ptbench (schema {version}, this one reads {SCHEMA_VERSION}); upgrade ptbench"
            )
        self.conn.execute("PRAGMA journal_mode = WAL")
        if version < SCHEMA_VERSION:
            with self._transaction():
                self._migrate_locked()

    def _tables(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def version(self) -> int:
        """The store's schema version (SQLite's user_version)."""
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: IMMEDIATE takes the write lock up front, so two processes
        opening an old or new store at once create or migrate it once, one after the other."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _migrate_locked(self) -> None:
        """Apply every migration past the stored version; call inside _transaction. The
        version is read again under the lock, since another process may have migrated."""
        version = max(self.version(), 1)
        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            present = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
            for name, kind in migration.columns:
                if name not in present:
                    self.conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            for statement in migration.statements:
                self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version = {migration.version}")

    # -- writing ---------------------------------------------------------------------------
    def write(self, result: RunResult) -> None:
        """Store one run, replacing an earlier row of the same run; committed at once."""
        row = asdict(result)
        row.update(provenance())
        row["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for name in JSON_COLUMNS:  # TypeError for values JSON cannot hold: nothing is written
            row[name] = encode_json(row.get(name))
        values = [row.get(name) for name in COLUMN_NAMES]
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        self.conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})", values)

    # -- reading ---------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, status FROM runs"))

    def stored(self) -> dict[str, tuple[str, str | None]]:
        """key -> (status, plugin_hash) of every stored run (the hash is None for runs stored
        before schema 3 recorded it)."""
        return {key: (status, code) for key, status, code in self.conn.execute("SELECT key, status, plugin_hash FROM runs")}

    def frame(self) -> pd.DataFrame:
        """Every run as a DataFrame, JSON columns decoded."""
        df = pd.read_sql_query(f"SELECT {', '.join(COLUMN_NAMES)} FROM runs ORDER BY task, strategy, seed", self.conn)
        for name in JSON_COLUMNS:
            df[name] = df[name].map(lambda s: json.loads(s) if s else {})
        return df

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

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
