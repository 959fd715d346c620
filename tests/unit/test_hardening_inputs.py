"""Hardening: inputs that cannot mean anything, broken installed plugins, poisoned or
unwritable caches, and locked or damaged stores each give one line that says what to do
(or a warning, where the sweep can go on), never a traceback, and lose no finished run.

Everything here is fast: no model is trained (sweeps run through a stub executor that
hands back ready-made results). The real-process, tmpfs and full-sweep cases are in
tests/integration/test_hardening_storage.py.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sqlite3
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ptbench.api import RunResult, RunSpec
from ptbench.errors import PtbenchError
from ptbench.registry import PluginWarning, default_registry
from ptbench.results.store import (
    COLUMN_NAMES,
    DEFAULT_LOCK_TIMEOUT,
    LOCK_TIMEOUT_ENV,
    SCHEMA_VERSION,
    Store,
    StoreLocked,
    provenance,
)
from ptbench.run.cache import CacheWarning, DonorCache, model_digest, state_digest
from ptbench.run.group import Group, GroupState, Trained
from ptbench.rng import RandomStreams
from ptbench.spec import parse_spec
from ptbench.strategies.full import Full
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.sweep import run_sweep
from ptbench.tasks.signal_noise import SignalNoise

from conftest import SMALL_TASK, make_result


def assert_one_line(result, pattern: str) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ptbench: error: ")
    assert re.search(pattern, lines[0]), lines[0]


def run_args(*extra: str, task: str = "signal-noise[d=100,n_test=200,steps=50]", strategy: str = "scratch", store: str = "s.db"):
    return ["run", "--seeds", "1", "--store", store, "--quiet", "--no-leaderboard", "--task", task, "--strategy", strategy, *extra]


# --------------------------------------------------------------------------- 1. values


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (run_args(task="signal-noise[shared=inf]"), r"signal-noise: parameter 'shared' is inf; give a finite number \(like 1.0\)"),
        (run_args(task="signal-noise[shared=-inf]"), r"parameter 'shared' is -inf; give a finite number"),
        (run_args(task="signal-noise[source_noise=1e400]"), r"parameter 'source_noise' is inf; give a finite number"),
        (run_args(task="signal-noise[target_specific=inf]"), r"parameter 'target_specific' is inf"),  # a None default typed float
        (run_args(strategy="l2-sp[alpha=inf]"), r"l2-sp: parameter 'alpha' is inf; give a finite number \(like 0.01\)"),
        (run_args(strategy="l2-sp[alpha=[0.1,inf]]"), r"l2-sp: parameter 'alpha' is inf"),
        (run_args(strategy="partial-filters[fraction=0.5,fraction=0.25]"),
         r"malformed SPEC 'partial-filters\[fraction=0.5,fraction=0.25\]': parameter 'fraction' is given twice; give it once"),
        (run_args(task="signal-noise[d=100, d=200]"), r"parameter 'd' is given twice"),
    ],
    ids=["inf", "minus-inf", "overflow", "typed-none-default", "strategy-inf", "inf-in-a-list", "repeated-key", "repeated-key-spaced"],
)
def test_a_value_that_cannot_mean_anything_gets_one_line(tmp_path, cli, argv, pattern):
    assert_one_line(cli(*argv), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before the store is created


def test_infinite_values_are_refused_in_code_too_and_finite_ones_unchanged():
    with pytest.raises(PtbenchError, match=r"parameter 'shared' is inf"):
        SignalNoise(shared=math.inf)
    with pytest.raises(PtbenchError, match=r"parameter 'shared' is an integer too large for a float"):
        SignalNoise(shared=10**400)
    assert SignalNoise(shared=3).shared == 3.0 and isinstance(SignalNoise(shared=3).shared, float)
    assert parse_spec("partial-filters[fraction=[0.25,0.5],freeze=true]") == ("partial-filters", {"fraction": [0.25, 0.5], "freeze": [True]})
    assert SignalNoise(d=7).d == 7  # ints are not floats: no infinity check gets in their way


# --------------------------------------------------------------------------- 2. entry points

GOOD = '''
from ptbench.api import Strategy, TransferPlan


class StillHere(Strategy):
    """Copy everything."""

    name = "still-here"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)
'''


def install(site: Path, dist: str, module: str, code: str, entry_points: str) -> None:
    """A real installed package: a module and its dist-info, in a folder put on sys.path."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """Three installed packages: one whose module raises at import, one whose entry point
    names a module that does not exist, and a good one."""
    site = tmp_path / "site"
    site.mkdir()
    install(site, "ptb_raises", "ptb_raises_mod", "raise RuntimeError('this package is broken')\n",
            "[ptbench.strategies]\nraises = ptb_raises_mod\n")
    install(site, "ptb_missing", "ptb_missing_mod", "X = 1\n", "[ptbench.tasks]\nmissing = ptb_not_there:Task\n")
    install(site, "ptb_good", "ptb_good_mod", GOOD, "[ptbench.strategies]\ngood = ptb_good_mod\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in ("ptb_good_mod", "ptb_raises_mod"):
        sys.modules.pop(name, None)


def test_a_broken_entry_point_is_one_warning_and_the_rest_still_loads(broken_site):
    with pytest.warns(PluginWarning) as caught:
        registry = default_registry()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert any(re.search(r"entry point 'raises' \(ptb_raises_mod\) of package ptb_raises 0.1 failed to import "
                         r"\(RuntimeError: this package is broken\); skipped it: fix or uninstall that package", m) for m in messages), messages
    assert any("entry point 'missing' (ptb_not_there:Task)" in m and "ModuleNotFoundError" in m for m in messages), messages
    assert registry.strategy("still-here").name == "still-here"  # the good package
    assert registry.strategy("scratch") and registry.task("signal-noise")  # and every built-in
    with warnings.catch_warnings():  # reported once per process, not at every registry
        warnings.simplefilter("error", PluginWarning)
        default_registry()


def test_list_and_leaderboard_work_beside_a_broken_entry_point(broken_site, cli, tmp_path, monkeypatch):
    monkeypatch.setattr("ptbench.registry._REPORTED", set())  # a fresh process
    with pytest.warns(PluginWarning) as caught:
        listed = cli("list")
    assert sorted(str(w.message).split()[2] for w in caught) == ["'missing'", "'raises'"]  # each named, once
    assert listed.code == 0, listed.err
    assert "still-here" in listed.out and "scratch" in listed.out
    with Store(tmp_path / "s.db") as store:
        for seed in (0, 1):
            store.write(make_result(seed=seed))
            store.write(make_result(strategy="full", seed=seed, target_acc=0.85))
    board = cli("leaderboard", "--store", "s.db", "--out", "lb")
    assert board.code == 0, board.err
    assert (tmp_path / "lb" / "README.md").exists()


def test_an_entry_point_that_clashes_with_a_built_in_is_skipped_with_a_warning(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "ptb_clash", "ptb_clash_mod", GOOD.replace('"still-here"', '"scratch"'), "[ptbench.strategies]\nclash = ptb_clash_mod\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    try:
        with pytest.warns(PluginWarning, match=r"entry point 'clash' .* skipped: two strategies are named 'scratch'"):
            registry = default_registry()
        assert registry.strategy("scratch") is Scratch
    finally:
        sys.modules.pop("ptb_clash_mod", None)


# --------------------------------------------------------------------------- 3. the cache


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))


def test_the_digest_is_over_every_tensor_in_name_order():
    model = tiny_model()
    state = model.state_dict()
    assert model_digest(model) == state_digest({k: state[k].clone() for k in reversed(list(state))})
    assert re.fullmatch(r"[0-9a-f]{64}", model_digest(model))
    changed = {k: v.clone() for k, v in state.items()}
    changed["0.weight"][0, 0] += 1e-7
    assert state_digest(changed) != model_digest(model)
    assert state_digest({"a": torch.zeros(2)}) != state_digest({"b": torch.zeros(2)})  # names count
    assert state_digest({"a": torch.zeros(2)}) != state_digest({"a": torch.zeros(2, dtype=torch.float64)})  # dtypes too


def test_a_poisoned_cache_entry_does_not_match_its_digest_and_is_retrained(tmp_path):
    task = SignalNoise(**SMALL_TASK)
    cache = DonorCache(tmp_path / "cache")
    model = tiny_model()
    cache.save(task, 0, "source-init", model, 0.75, 1.5, {"n": 1}, [])
    loaded = cache.load(task, 0, "source-init")
    assert loaded is not None and loaded.digest == model_digest(model) and loaded.test_acc == 0.75

    (path,) = (tmp_path / "cache").glob("*.pt")
    entry = torch.load(path, weights_only=True)
    assert entry["key"] == cache.key(task, 0, "source-init") and entry["digest"] == model_digest(model)
    entry["state"] = {k: torch.zeros_like(v) for k, v in entry["state"].items()}  # zeroed weights...
    entry["test_acc"] = 1.0  # ...claiming a perfect source model, the key and digest left as they were
    torch.save(entry, path)
    with pytest.warns(CacheWarning, match=r"does not match its digest .* retraining it"):
        assert cache.load(task, 0, "source-init") is None

    del entry["digest"]  # an entry with no digest at all is no better
    torch.save(entry, path)
    with pytest.warns(CacheWarning, match="does not match its digest"):
        assert cache.load(task, 0, "source-init") is None


def test_every_run_of_a_group_records_its_source_models_digest():
    task = SignalNoise(**SMALL_TASK)
    group = Group(task, 0, [RunSpec(task, Scratch(), 0), RunSpec(task, Full(), 0)])
    state = GroupState(group, RandomStreams(0))
    model = tiny_model()
    state.donors["source"] = Trained(model, 0.9, 1.0, {}, [])  # as the batched engine builds it: no digest yet
    fields = state.source_fields("cpu")
    assert fields["donor_digest"] == model_digest(model) == state.donors["source"].digest
    result = RunResult.for_spec(group.specs[0], **fields)
    assert result.donor_digest == model_digest(model)


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_a_cache_folder_that_cannot_be_written_warns_once_and_is_still_read(tmp_path, kind):
    task = SignalNoise(**SMALL_TASK)
    folder = tmp_path / "cache"
    folder.write_text("not a folder")
    if kind == "under-a-file":
        folder = folder / "inner"
    cache = DonorCache(folder)
    with pytest.warns(CacheWarning, match=r"cannot write the donor cache .*is a file, not a folder.*pass a writable --cache-dir") as caught:
        cache.save(task, 0, "source-init", tiny_model(), 0.5, 1.0, {}, [])
        cache.save(task, 1, "source-init", tiny_model(), 0.5, 1.0, {}, [])
        DonorCache(folder).save(task, 2, "source-init", tiny_model(), 0.5, 1.0, {}, [])  # another unit of the same sweep
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    assert cache.load(task, 0, "source-init") is None  # nothing to read: a miss, not an error


def test_a_cache_folder_that_cannot_be_looked_into_is_a_miss_reported_once(tmp_path, monkeypatch):
    task = SignalNoise(**SMALL_TASK)
    folder = tmp_path / "locked-cache"
    cache = DonorCache(folder)
    real_exists = Path.exists

    def exists(self):
        if self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))  # what a non-root user meets in a mode-000 folder
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    with pytest.warns(CacheWarning, match=r"cannot read the donor cache .*Permission denied.*training donors instead") as caught:
        assert cache.load(task, 0, "source-init") is None
        assert cache.load(task, 1, "source-init") is None
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1


# --------------------------------------------------------------------------- 4. the store: schema 4


def test_schema_4_records_the_donor_digest_and_the_machine(tmp_path):
    assert SCHEMA_VERSION == 4
    for name in ("donor_digest", "cpu_model", "torch_threads", "load_1min", "memory_total_gb"):
        assert name in COLUMN_NAMES
    with Store(tmp_path / "s.db") as store:
        store.write(make_result(donor_digest="ab" * 32))
        run = store.frame().iloc[0]
    assert run["donor_digest"] == "ab" * 32
    assert run["torch_threads"] == torch.get_num_threads()
    assert isinstance(run["cpu_model"], str) and run["cpu_model"]
    assert run["memory_total_gb"] > 0 and run["load_1min"] >= 0
    fixed = provenance()
    assert fixed["torch_threads"] == torch.get_num_threads()
    provenance.cache_clear()  # still there for callers that re-read the checkout


def test_a_version_3_store_is_migrated_to_4_and_keeps_its_runs(tmp_path):
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('application', 'ptbench')")
    v3 = COLUMN_NAMES[: COLUMN_NAMES.index("path") + 1]
    conn.execute(f"CREATE TABLE runs ({', '.join(v3)})")
    conn.execute(f"INSERT INTO runs (key, task, task_params, strategy, strategy_params, seed, status, target_acc) "
                 "VALUES ('k', 't', '{}', 's', '{}', 0, 'ok', 0.5)")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.version() == 4
        old = store.frame().iloc[0]
    assert old["target_acc"] == 0.5 and old["donor_digest"] is None and old["load_1min"] is None


# --------------------------------------------------------------------------- 4. locks


def test_the_lock_timeout_is_60_s_a_parameter_and_an_environment_override(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_TIMEOUT_ENV, raising=False)
    with Store(tmp_path / "a.db") as store:
        assert store.lock_timeout == DEFAULT_LOCK_TIMEOUT == 60.0
    with Store(tmp_path / "a.db", lock_timeout=2.5) as store:
        assert store.lock_timeout == 2.5
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "7")
    with Store(tmp_path / "a.db") as store:
        assert store.lock_timeout == 7.0
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(PtbenchError, match=r"PTBENCH_LOCK_TIMEOUT='soon' is not a number of seconds; set it to one such as 60"):
        Store(tmp_path / "a.db")


@pytest.fixture
def locked(tmp_path):
    """A store and another connection holding its write lock (as another process would)."""
    Store(tmp_path / "s.db").close()
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def test_a_write_to_a_locked_store_is_one_line(tmp_path, locked):
    with Store(tmp_path / "s.db", lock_timeout=0.1) as store:
        with pytest.raises(StoreLocked, match=r"the store '.*s.db' is locked by another process \(waited 0.1 s\); "
                                              r"let that process finish and run again, or set PTBENCH_LOCK_TIMEOUT to wait longer"):
            store.write(make_result())
        locked.execute("ROLLBACK")
        store.write(make_result())  # free again: the store works as ever
        assert len(store.statuses()) == 1


class StubExecutor:
    """Hands back one ready-made result per spec, calling `after(n)` after the n-th."""

    def __init__(self, after=lambda n: None):
        self.after = after

    def run(self, groups, options):
        n = 0
        for group in groups:
            for spec in group.specs:
                yield RunResult.for_spec(spec, source_acc=0.9, target_acc=0.5 + 0.01 * n, donor_digest="d" * 64)
                n += 1
                self.after(n)


def specs(seeds=(0, 1)) -> list[RunSpec]:
    task = SignalNoise(**SMALL_TASK)
    return [RunSpec(task, strategy, seed) for seed in seeds for strategy in (Scratch(), Full())]


def test_a_sweep_locked_out_keeps_every_finished_run_and_the_next_sweep_imports_them(tmp_path, locked):
    todo = specs()
    with Store(tmp_path / "s.db", lock_timeout=0.1) as store:
        with pytest.raises(StoreLocked) as raised:
            run_sweep(todo, store, executor=StubExecutor(), progress=False)
        spool = store.unwritten_path
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(r"^4 finished run\(s\) could not be written to the store '.*s.db': another process kept it locked for more "
                     r"than 0.1 s; they are kept in '.*s.db.unwritten.jsonl', which the next `ptbench run` with this store imports", message)
    assert spool.name == "s.db.unwritten.jsonl"
    kept = [json.loads(line) for line in spool.read_text().splitlines()]
    assert sorted(row["key"] for row in kept) == sorted(spec.key for spec in todo)
    assert all(row["plugin_hash"] and row["donor_digest"] == "d" * 64 for row in kept)

    locked.execute("ROLLBACK")  # the other process is done
    with Store(tmp_path / "s.db", lock_timeout=0.1) as store:
        again = run_sweep(todo, store, executor=StubExecutor(), progress=False)
        assert (again.ran, again.skipped) == (0, 4)  # imported, not re-run
        assert sorted(store.frame()["target_acc"]) == [0.5, 0.51, 0.52, 0.53]
    assert not spool.exists()


def test_a_lock_that_ends_mid_sweep_loses_nothing(tmp_path, locked):
    spool = tmp_path / "s.db.unwritten.jsonl"
    kept = []

    def release(n):
        if n == 2:
            kept.extend(spool.read_text().splitlines())  # locked out so far: both runs are kept
            locked.execute("ROLLBACK")

    with Store(tmp_path / "s.db", lock_timeout=0.1) as store:
        done = run_sweep(specs(), store, executor=StubExecutor(release), progress=False)
        assert done.ran == 4 and len(store.statuses()) == 4
    assert len(kept) == 2 and not spool.exists()


def test_a_store_locked_while_it_needs_migrating_is_one_line(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('application', 'ptbench')")
    conn.execute(f"CREATE TABLE runs ({', '.join(COLUMN_NAMES[:COLUMN_NAMES.index('path') + 1])})")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreLocked, match=r"the store '.*old.db' is locked by another process \(waited 0.2 s\)"):
            Store(path, lock_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Store(path) as store:
        assert store.version() == SCHEMA_VERSION


def test_a_line_cut_short_in_the_kept_runs_is_dropped_with_a_warning_and_the_rest_imported(tmp_path):
    with Store(tmp_path / "s.db") as store:
        good = store.row(make_result(seed=3))
        store.keep_unwritten([good])
        with open(store.unwritten_path, "a") as spool:
            spool.write('{"key": "toy|scratch|4", "task": "to')  # its writer was killed mid-line
        with pytest.warns(UserWarning, match=r"1 line\(s\) were not runs and were dropped; those runs are re-run"):
            run_sweep([], store, progress=False)
        assert list(store.statuses()) == ["toy|scratch|3"]
        assert not store.unwritten_path.exists()


# --------------------------------------------------------------------------- 4. damaged stores


def _damage(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


def key_only_v2(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('application', 'ptbench')")
    conn.execute("CREATE TABLE runs (key TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO runs VALUES ('a')")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_a_runs_table_missing_its_columns_is_refused_untouched(tmp_path, cli):
    path = tmp_path / "s.db"
    key_only_v2(path)
    before = path.read_bytes()
    with pytest.raises(PtbenchError, match=r"the store '.*s.db' is damaged: its runs table lacks column\(s\) task, task_params, "
                                           r"strategy, strategy_params, seed and \d+ more that schema 2 has; restore it from a copy"):
        Store(path)
    assert path.read_bytes() == before
    assert_one_line(cli(*run_args()), r"the store 's.db' is damaged: its runs table lacks column")
    assert_one_line(cli("leaderboard", "--store", "s.db", "--out", "lb"), r"the store 's.db' is damaged")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "sql, pattern",
    [
        ("UPDATE runs SET diagnostics = '{\"norm\": 0.5' WHERE seed = 1",
         r"the store '.*s.db' is damaged: run 'toy\|scratch\|1' holds invalid JSON in column diagnostics \(.*\); restore it from a copy"),
        ("UPDATE runs SET task_params = 'not json' WHERE seed = 0",
         r"run 'toy\|scratch\|0' holds invalid JSON in column task_params"),
        ("UPDATE runs SET target_acc = 'n/a' WHERE seed = 1",
         r"the store '.*s.db' is damaged: run 'toy\|scratch\|1' holds text 'n/a' in its number column target_acc; restore it"),
        ("UPDATE runs SET seed = 'zero' WHERE seed = 0", r"holds text 'zero' in its number column seed"),
    ],
    ids=["bad-json", "bad-json-params", "text-in-real", "text-in-integer"],
)
def test_a_damaged_row_is_one_line_when_read_and_a_sweep_will_not_write_into_it(tmp_path, cli, sql, pattern):
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.write(make_result(seed=0, diagnostics={"norm": float("nan")}))  # NaN is valid for Python's JSON: not damage
        store.write(make_result(seed=1))
        assert len(store.frame()) == 2
        store.check()
    _damage(path, sql)
    with Store(path) as store:
        with pytest.raises(PtbenchError, match=pattern):
            store.frame()
        with pytest.raises(PtbenchError, match=pattern):
            run_sweep(specs(), store, executor=StubExecutor(), progress=False)
        assert len(store.statuses()) == 2  # nothing was written
    assert_one_line(cli("leaderboard", "--store", "s.db", "--out", "lb"), pattern.replace("'.*s.db'", "'s.db'"))


def test_the_lock_timeout_flag_reaches_the_store(cli, task_spec, monkeypatch):
    from ptbench.results.store import lock_timeout_from_env

    monkeypatch.setenv("PTBENCH_LOCK_TIMEOUT", "60")  # restored after the test
    res = cli("run", "--task", task_spec(), "--strategy", "scratch", "--seeds", "1", "--lock-timeout", "7.5", "--quiet", "--no-cache")
    assert res.code == 0, res.err
    assert lock_timeout_from_env() == 7.5
