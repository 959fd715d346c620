"""The results store: one SQLite row per run, keyed by (task, strategy, seed) identity.

SQLite because a sweep killed at any moment must keep every run that finished (each run is
committed on its own), because several `ptbench run` processes may share one store (WAL mode,
a busy timeout, and a primary key that makes a second write of the same run a replacement,
never a duplicate), and because a single file is easy to pass around and `compare`.

The store carries its schema version (SQLite's user_version, plus an `application` row in
`meta` that tells a ptbench store from any other SQLite file). Opening an older store applies
MIGRATIONS in one transaction; a store from a newer ptbench is refused, never altered.

What can go wrong with the file, and what a user sees (one line, a PtbenchError, never a
traceback):

* locked by another process for longer than the lock timeout (`Store(lock_timeout=...)`,
  else the `PTBENCH_LOCK_TIMEOUT` environment variable, else 60 s): StoreLocked. A sweep keeps
  the runs it could not write in memory and in `STORE.unwritten.jsonl` next to the store
  (`unwritten_path`), and the next sweep into the store imports that file first;
* a full disk: StoreFull; the failed write is rolled back, every run written before stays;
* damage: a runs table that lacks columns its schema version has (refused on opening,
  untouched), a JSON column that does not decode or a number column holding text (refused
  by `frame()` and by `check()`, which a sweep calls before it writes anything).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

import errno
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import torch

from ptbench.api import RunResult
from ptbench.errors import PtbenchError

SCHEMA_VERSION = 4
APPLICATION = "ptbench"

#: How long a write waits for another process's lock before giving up (seconds); the
#: environment variable overrides it (for the CLI, and for a user on a slow shared disk).
DEFAULT_LOCK_TIMEOUT = 60.0
LOCK_TIMEOUT_ENV = "PTBENCH_LOCK_TIMEOUT"

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
    Migration(
        version=4,
        why="results two stores can be checked against each other: the digest of the source model "
        "a run inherited from (the same donor, or not), and the machine it ran on: CPU model, torch's "
        "thread count, the 1-minute load average when the run was stored, and total memory (GiB), "
        "which together say whether two runs' seconds can be compared",
        columns=(
            ("donor_digest", "TEXT"), ("cpu_model", "TEXT"), ("torch_threads", "INTEGER"),
            ("load_1min", "REAL"), ("memory_total_gb", "REAL"),
        ),
    ),
]
assert [m.version for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1)), "migrations must be consecutive"

COLUMNS = V1_COLUMNS + [column for m in MIGRATIONS for column in m.columns]
COLUMN_NAMES = [name for name, _ in COLUMNS]
JSON_COLUMNS = ("task_params", "strategy_params", "diagnostics")
#: Columns that hold numbers (REAL or INTEGER): text in one of them is damage.
NUMBER_COLUMNS = tuple(name for name, kind in COLUMNS if kind.split()[0] in ("REAL", "INTEGER"))


def _columns_at(version: int) -> list[str]:
    """The runs table's columns at schema `version`."""
    return [name for name, _ in V1_COLUMNS] + [c for m in MIGRATIONS if m.version <= version for c, _ in m.columns]


class StoreLocked(PtbenchError):
    """Another process held the store's write lock for longer than the lock timeout."""


class StoreFull(PtbenchError):
    """The disk holding the store is full; the failed write was rolled back."""


class StoreWriteError(PtbenchError):
    """The store could not be written (read-only, damaged, an I/O error)."""


def lock_timeout_from_env(default: float = DEFAULT_LOCK_TIMEOUT) -> float:
    """`PTBENCH_LOCK_TIMEOUT` in seconds when set, else `default`."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise PtbenchError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds; set it to one such as 60, or unset it")
    return value


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


#: What ptbench itself writes inside a checkout: these never make a run "dirty".
OWN_OUTPUTS = ("leaderboard", "results", ".ptbench-cache")


def provenance() -> dict[str, Any]:
    """What produced a result: versions, the git state of ptbench's own checkout, the host
    (its CPU model and total memory), torch's thread count and the load average now.

    The commit is only taken when ptbench itself is the checkout's top level (an editable
    install), never from some unrelated repository an installed ptbench happens to sit in.
    `git_dirty` says whether tracked files other than ptbench's own outputs (OWN_OUTPUTS:
    the leaderboards it writes, its results and cache) differ from the commit. All but the
    load average and the thread count are read once per process (`provenance.cache_clear()`
    reads them again); those two change while a process runs and cost nothing to read.
    """
    return {**_fixed_provenance(), "torch_threads": torch.get_num_threads(), "load_1min": _load_1min()}


def _load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not on this platform
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name, sep, value = line.partition(":")
                if sep and name.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or None


def _memory_total_gb() -> float | None:
    """Total memory in GiB (2**30 bytes), from /proc/meminfo or sysconf."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) * 1024 / 2**30, 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 2)
    except (OSError, ValueError, AttributeError):
        return None


@lru_cache(maxsize=1)
def _fixed_provenance() -> dict[str, Any]:
    """The part of `provenance()` that does not change while a process runs."""
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
        "cpu_model": _cpu_model(),
        "memory_total_gb": _memory_total_gb(),
    }


provenance.cache_clear = _fixed_provenance.cache_clear  # type: ignore[attr-defined]


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
    """An open results database. `lock_timeout` is how long opening or writing waits for
    another process's lock before giving up with StoreLocked (None: the PTBENCH_LOCK_TIMEOUT
    environment variable, else DEFAULT_LOCK_TIMEOUT, 60 s)."""

    def __init__(self, path: str | Path, create: bool = True, lock_timeout: float | None = None):
        self.path = Path(path)
        self.lock_timeout = lock_timeout_from_env() if lock_timeout is None else float(lock_timeout)
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
            self._open_retrying_locks(self.lock_timeout)
        except sqlite3.OperationalError as err:  # cannot open, read-only, locked, a full disk
            self.close()
            raise self._failure(err, f"cannot use the store {where} ({err}); pass a writable --store path") from None
        except sqlite3.DatabaseError as err:  # not a database at all, or a damaged one
            self.close()
            raise PtbenchError(f"{where} is not a ptbench results store ({err}); pass another --store path") from None
        except PtbenchError:
            self.close()
            raise

    @property
    def where(self) -> str:
        return repr(str(self.path))

    @property
    def unwritten_path(self) -> Path:
        """Where a sweep keeps the runs it could not write (the store was locked), one JSON
        row a line, until a later sweep into this store imports them."""
        return self.path.with_name(self.path.name + ".unwritten.jsonl")

    def _open_retrying_locks(self, patience: float = DEFAULT_LOCK_TIMEOUT) -> None:
        """Connect and create/check/migrate the schema. Switching a store to WAL needs an
        exclusive lock, and SQLite answers "database is locked" at once, without its busy
        handler, when processes open a new or old store together; so retry for a while."""
        deadline = time.monotonic() + patience
        while True:
            self.conn = sqlite3.connect(self.path, timeout=patience, isolation_level=None)
            self._set_busy(patience)
            try:
                self._init_schema()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                self.close()
                time.sleep(0.05)

    def _set_busy(self, seconds: float) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {max(int(seconds * 1000), 0)}")

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
        self._check_columns(version)
        self.conn.execute("PRAGMA journal_mode = WAL")
        if version < SCHEMA_VERSION:
            with self._transaction():
                self._migrate_locked()

    def _check_columns(self, version: int) -> None:
        """Refuse, untouched, a runs table that lacks columns its schema version has (a
        damaged file, or one some other tool rewrote)."""
        present = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
        missing = [name for name in _columns_at(max(version, 1)) if name not in present]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise PtbenchError(
                f"the store {self.where} is damaged: its runs table lacks column(s) {shown} that schema {version} has; "
                "restore it from a copy or pass another --store path"
            )

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
            if self.conn.in_transaction:  # SQLite may have rolled back already (a full disk)
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
    def row(self, result: RunResult) -> dict[str, Any]:
        """The row a result is stored as: its fields, provenance, the time, JSON encoded.
        TypeError for values JSON cannot hold."""
        row = asdict(result)
        row.update(provenance())
        row["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for name in JSON_COLUMNS:
            row[name] = encode_json(row.get(name))
        return {name: row.get(name) for name in COLUMN_NAMES}

    def write(self, result: RunResult) -> None:
        """Store one run, replacing an earlier row of the same run; committed at once.
        TypeError for values JSON cannot hold (nothing is written); StoreLocked, StoreFull
        or StoreWriteError when the store cannot take it (nothing is written either)."""
        self.write_rows([self.row(result)])

    def write_rows(self, rows: list[dict[str, Any]], wait: float | None = None, keep_newer: bool = False) -> None:
        """Store rows (see `row`) in one transaction: all of them or none. `wait`: seconds
        to wait for another process's lock (default: the lock timeout). `keep_newer`: a row
        does not replace a stored row of the same run created later (for importing)."""
        if not rows:
            return
        names = ", ".join(COLUMN_NAMES)
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        if keep_newer:
            updates = ", ".join(f"{n} = excluded.{n}" for n in COLUMN_NAMES if n != "key")
            sql = (f"INSERT INTO runs ({names}) VALUES ({placeholders}) ON CONFLICT(key) DO UPDATE SET {updates} "
                   "WHERE runs.created_at IS NULL OR excluded.created_at >= runs.created_at")
        else:
            sql = f"INSERT OR REPLACE INTO runs ({names}) VALUES ({placeholders})"
        values = [[row.get(name) for name in COLUMN_NAMES] for row in rows]
        waited = self.lock_timeout if wait is None else wait
        if wait is not None:
            self._set_busy(wait)
        try:
            if len(values) == 1:
                self.conn.execute(sql, values[0])  # autocommit: one statement, one transaction
            else:
                with self._transaction():
                    self.conn.executemany(sql, values)
        except (sqlite3.DatabaseError, OSError) as err:
            raise self._failure(err, f"cannot write the store {self.where} ({err}); make it writable or pass another --store path",
                                waited) from None
        finally:
            if wait is not None and self.conn is not None:
                self._set_busy(self.lock_timeout)

    def free_now(self) -> bool:
        """Whether the write lock can be had at once (a probe that writes nothing)."""
        self._set_busy(0)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as err:
            if isinstance(self._failure(err, ""), StoreLocked):
                return False
            raise self._failure(err, f"cannot write the store {self.where} ({err}); make it writable or pass another --store path") from None
        finally:
            self._set_busy(self.lock_timeout)

    def _failure(self, err: Exception, otherwise: str, waited: float | None = None) -> PtbenchError:
        """The one-line error for a failed open or write."""
        text = str(err).lower()
        waited = self.lock_timeout if waited is None else waited
        if "locked" in text or "busy" in text:
            return StoreLocked(
                f"the store {self.where} is locked by another process (waited {waited:g} s); let that process finish "
                f"and run again, or set {LOCK_TIMEOUT_ENV} to wait longer"
            )
        if "disk is full" in text or getattr(err, "errno", None) == errno.ENOSPC or getattr(err, "sqlite_errorcode", None) == 13 \
                or ("i/o error" in text and _free_bytes(self.path.parent) < 1 << 20):  # the WAL index could not grow
            return StoreFull(
                f"the disk holding the store {self.where} is full ({err}); free some space and run again "
                "(the store keeps every run written before)"
            )
        return StoreWriteError(otherwise)

    # -- runs a sweep could not write ------------------------------------------------------
    def keep_unwritten(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to `unwritten_path` (flushed to disk before returning), for a later
        sweep to import. OSError when that file cannot be written either."""
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        with _locked_file(self.unwritten_path, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def import_unwritten(self, rows: list[dict[str, Any]] = (), wait: float | None = None) -> int:
        """Write the rows in `unwritten_path` (and `rows`) into the store in one transaction,
        then remove the file; returns how many rows were written. A stored row of the same
        run created later is kept. StoreLocked etc. as `write_rows`; the file is then kept."""
        rows = list(rows)
        path = self.unwritten_path
        try:
            return self._import_file(path, rows, wait)
        except FileNotFoundError:  # none, or another process imported it just now
            self.write_rows(rows, wait=wait, keep_newer=True)
            return len(rows)

    def _import_file(self, path: Path, rows: list[dict[str, Any]], wait: float | None) -> int:
        with _locked_file(path, "r+") as handle:
            kept, bad = [], 0
            for line in handle.read().splitlines():
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                        raise ValueError("not a row")
                except ValueError:  # a line cut short when its writer was killed: that run is re-run
                    bad += line.strip() != ""
                    continue
                kept.append({name: row.get(name) for name in COLUMN_NAMES})
            by_key = {row["key"]: row for row in kept + rows}  # the same run twice: the later one
            self.write_rows(list(by_key.values()), wait=wait, keep_newer=True)
            handle.truncate(0)  # under the lock: a writer that waited for it starts a new file
            path.unlink(missing_ok=True)
        if bad:
            warnings.warn(f"{path}: {bad} line(s) were not runs and were dropped; those runs are re-run", UserWarning, stacklevel=2)
        return len(by_key)

    # -- reading ---------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        return dict(self._read("SELECT key, status FROM runs"))

    def stored(self) -> dict[str, tuple[str, str | None]]:
        """key -> (status, plugin_hash) of every stored run (the hash is None for runs stored
        before schema 3 recorded it)."""
        return {key: (status, code) for key, status, code in self._read("SELECT key, status, plugin_hash FROM runs")}

    def _read(self, sql: str) -> list[tuple]:
        try:
            return self.conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as err:
            raise self._damaged(f"it cannot be read ({err})") from None

    def _damaged(self, what: str) -> PtbenchError:
        return PtbenchError(f"the store {self.where} is damaged: {what}; restore it from a copy or pass another --store path")

    def check(self) -> None:
        """Refuse a damaged store before anything is written into it: a run whose JSON column
        does not decode, or a number column holding text (PtbenchError naming the run)."""
        self._check_numbers()
        candidates: list[tuple[str, str, Any]] = []
        try:  # SQLite's json_valid narrows the scan down; Python's decoder has the last word
            for name in JSON_COLUMNS:
                candidates += [(key, name, value) for key, value in self.conn.execute(
                    f"SELECT key, {name} FROM runs WHERE {name} IS NOT NULL AND {name} != '' AND NOT json_valid({name})")]
        except sqlite3.OperationalError:  # an SQLite built without JSON: look at every row
            candidates = [(key, name, value) for name in JSON_COLUMNS
                          for key, value in self._read(f"SELECT key, {name} FROM runs")]
        except sqlite3.DatabaseError as err:
            raise self._damaged(f"it cannot be read ({err})") from None
        for key, name, value in candidates:
            _decode(value, key, name, self)

    def _check_numbers(self) -> None:
        bad = " OR ".join(f"typeof({n}) IN ('text', 'blob')" for n in NUMBER_COLUMNS)
        rows = self._read(f"SELECT key, {', '.join(f'typeof({n}), {n}' for n in NUMBER_COLUMNS)} FROM runs WHERE {bad} LIMIT 2")
        if not rows:
            return
        key, cells = rows[0][0], rows[0][1:]
        for name, kind, value in zip(NUMBER_COLUMNS, cells[::2], cells[1::2]):
            if kind in ("text", "blob"):
                more = " (and more runs)" if len(rows) > 1 else ""
                raise self._damaged(f"run {key!r}{more} holds {kind} {_short(value)} in its number column {name}")

    def frame(self) -> "pd.DataFrame":
        """Every run as a DataFrame, JSON columns decoded. PtbenchError for a damaged store."""
        self._check_numbers()
        try:
            import pandas as pd  # here, not at import: a sweep that writes no table never pays for it

            df = pd.read_sql_query(f"SELECT {', '.join(COLUMN_NAMES)} FROM runs ORDER BY task, strategy, seed", self.conn)
        except (sqlite3.DatabaseError, getattr(pd.errors, "DatabaseError", sqlite3.DatabaseError)) as err:
            raise self._damaged(f"it cannot be read ({' '.join(str(err).split())})") from None
        for name in JSON_COLUMNS:
            df[name] = pd.Series([_decode(s, key, name, self) for key, s in zip(df["key"], df[name])], index=df.index, dtype=object)
        return df

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _free_bytes(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return math.inf




def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _decode(text: Any, key: str, column: str, store: Store) -> Any:
    """One JSON cell as frame() gives it ({} for an empty one); PtbenchError naming the run."""
    if not text:
        return {}
    try:
        return json.loads(text)
    except (ValueError, TypeError) as err:
        raise store._damaged(f"run {key!r} holds invalid JSON in column {column} ({err})") from None


@contextmanager
def _locked_file(path: Path, mode: str) -> Iterator[Any]:
    """`path` opened in `mode` under an exclusive lock (where the platform has flock). A
    file removed while waiting for the lock (imported by another process) is opened anew."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        fcntl = None
    while True:
        handle = open(path, mode, encoding="utf-8")
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(handle.fileno())
                if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                    handle.close()
                    if "r" in mode:
                        raise FileNotFoundError(errno.ENOENT, "imported meanwhile", str(path))
                    continue
            yield handle
            return
        finally:
            if not handle.closed:
                handle.close()


def open_existing(path: str | Path) -> Store:
    return Store(path, create=False)


def export_frame(df: "pd.DataFrame", fmt: str, out: str | Path | None) -> str | None:
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
