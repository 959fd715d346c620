"""Hardening, end to end: real processes holding a store's lock, a full disk (a small tmpfs),
a read-only cache (a tmpfs remounted read-only), a poisoned cache under a real sweep, and a
broken installed plugin met by a real `ptbench` process.

The tmpfs cases need root (`mount -t tmpfs`); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptbench.api import RunResult, RunSpec
from ptbench.errors import PtbenchError
from ptbench.results.store import Store, StoreFull
from ptbench.run.cache import CacheWarning, model_digest
from ptbench.run.options import RunOptions
from ptbench.strategies.full import Full
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.sweep import run_sweep
from ptbench.tasks.signal_noise import SignalNoise

from conftest import SMALL_TASK, make_result

TASK = "signal-noise[d=100,m=10,n_source=100,n_target=40,n_test=200,steps=50]"


def ptbench(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ptbench", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ptbench: error: ") and re.search(pattern, lines[0]), lines[0]


# --------------------------------------------------------------------------- tmpfs


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (as root), yield a function mounting one at a folder, unmount after."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def specs(seeds=(0, 1)) -> list[RunSpec]:
    task = SignalNoise(**SMALL_TASK)
    return [RunSpec(task, strategy, seed) for seed in seeds for strategy in (Scratch(), Full())]


class BigDiagnostics:
    """An executor handing back results with diagnostics far larger than a full disk takes."""

    def run(self, groups, options):
        for group in groups:
            for spec in group.specs:
                yield RunResult.for_spec(spec, source_acc=0.9, target_acc=0.5, diagnostics={"filler": "x" * 200_000})


def test_a_full_disk_is_one_line_and_the_store_stays_intact(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "disk")
    path = disk / "s.db"
    with Store(path) as store:  # a sweep is writing when the disk fills up
        for seed in range(3):
            store.write(make_result(seed=seed))
        filler = fill(disk)
        with pytest.raises(StoreFull, match=r"the disk holding the store '.*s.db' is full \(database or disk is full\); "
                                            r"free some space and run again \(the store keeps every run written before\)"):
            store.write(make_result(seed=9, diagnostics={"filler": "x" * 200_000}))
        with pytest.raises(StoreFull) as raised:
            run_sweep(specs(), store, executor=BigDiagnostics(), progress=False)
        message = str(raised.value)
        assert "\n" not in message
        assert re.search(r"is full .*; 1 finished run\(s\) were not stored: they could not be kept in '.*s.db.unwritten.jsonl' "
                         r"either \(No space left on device\), so the next run re-runs them$", message), message
        assert len(store.frame()) == 3  # still readable, on the full disk
    with Store(path) as store:  # still the disk is full: a leaderboard can still read it
        assert len(store.frame()) == 3

    filler.unlink()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    with Store(path) as store:
        assert sorted(store.frame()["seed"]) == [0, 1, 2]
        done = run_sweep(specs(), store, executor=BigDiagnostics(), progress=False)  # space again: it simply goes on
        assert done.ran == 4 and len(store.statuses()) == 7


def test_a_full_disk_through_the_cli_is_one_line(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "disk")
    Store(disk / "s.db").close()
    fill(disk)
    proc = ptbench("run", "--task", TASK, "--strategy", "scratch", "--seeds", "1", "--store", str(disk / "s.db"),
                   "--no-leaderboard", "--quiet", "--no-cache", cwd=tmp_path)
    one_error_line(proc, r"the disk holding the store '.*s.db' is full .*free some space and run again")


def test_a_cache_on_a_full_disk_warns_once_and_the_sweep_goes_on(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "cache")
    fill(disk)
    with Store(tmp_path / "s.db") as store:
        with pytest.warns(CacheWarning, match=r"cannot write the donor cache .*going on without saving donors there") as caught:
            done = run_sweep(specs(), store, RunOptions(cache_dir=str(disk)), progress=False)
        assert done.ran == 4 and done.failed == 0
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1


def test_a_read_only_cache_is_read_and_not_written(tmp_path, tmpfs):
    disk = tmpfs(tmp_path / "cache", size="16m")
    with Store(tmp_path / "a.db") as store:
        run_sweep(specs(seeds=(0,)), store, RunOptions(cache_dir=str(disk)), progress=False)
    entries = sorted(p.name for p in disk.iterdir())
    assert len(entries) == 1
    proc = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {proc.stderr.strip()}")
    with Store(tmp_path / "b.db") as store:
        with pytest.warns(CacheWarning, match=r"cannot write the donor cache .*Read-only file system.*entries it holds are still read"):
            done = run_sweep(specs(seeds=(0, 1)), store, RunOptions(cache_dir=str(disk)), progress=False)
        assert done.ran == 4 and done.failed == 0
        first = store.frame()
    with Store(tmp_path / "a.db") as store:
        before = store.frame()
    assert sorted(p.name for p in disk.iterdir()) == entries
    # seed 0's donor came from the read-only cache: the same numbers as when it was trained
    merged = first[first["seed"] == 0].set_index("key")[["target_acc", "donor_digest"]]
    assert merged.equals(before.set_index("key")[["target_acc", "donor_digest"]].loc[merged.index])


# --------------------------------------------------------------------------- locks, real processes

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the store's write lock for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_store_locked_past_the_timeout_is_one_line_and_its_runs_are_imported_later(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    args = ["run", "--task", TASK, "--strategy", "scratch", "--strategy", "full", "--seeds", "2", "--store", str(path),
            "--no-leaderboard", "--quiet", "--no-cache"]
    holder = hold_lock(path, 600)
    try:
        proc = ptbench(*args, cwd=tmp_path, env={"PTBENCH_LOCK_TIMEOUT": "1"})
    finally:
        holder.kill()
        holder.wait()
    one_error_line(proc, r"4 finished run\(s\) could not be written to the store '.*s.db': another process kept it locked for "
                         r"more than 1 s; they are kept in '.*s.db.unwritten.jsonl', which the next `ptbench run` with this store "
                         r"imports \(set PTBENCH_LOCK_TIMEOUT to wait longer\)")
    assert len((tmp_path / "s.db.unwritten.jsonl").read_text().splitlines()) == 4

    again = ptbench(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 run(s) done, 4 already stored" in again.stderr
    assert not (tmp_path / "s.db.unwritten.jsonl").exists()
    with Store(path) as store:
        runs = store.frame()
    assert len(runs) == 4 and set(runs["status"]) == {"ok"} and runs["donor_digest"].notna().all()


def test_a_lock_shorter_than_the_default_timeout_is_waited_for(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    holder = hold_lock(path, 3)
    start = time.monotonic()
    with Store(path) as store:  # the default: 60 s
        assert store.lock_timeout == 60.0
        done = run_sweep(specs(seeds=(0,)), store, RunOptions(), progress=False)
        assert done.ran == 2 and len(store.statuses()) == 2
    assert holder.wait(30) == 0
    assert time.monotonic() - start < 60
    assert not store.unwritten_path.exists()


# --------------------------------------------------------------------------- the cache under a real sweep


class CountingSignalNoise(SignalNoise):
    """Counts source-side data draws: they happen exactly when a source model is trained."""

    name = "counting-signal-noise-hardening"
    source_draws = 0

    def data(self, role, streams):
        if role == "source":
            type(self).source_draws += 1
        return super().data(role, streams)


def test_a_poisoned_cache_is_retrained_and_the_runs_record_the_real_donor(tmp_path):
    cache = tmp_path / "cache"
    task = CountingSignalNoise(**SMALL_TASK)
    todo = [RunSpec(task, Scratch(), 0), RunSpec(task, Full(), 0)]
    with Store(tmp_path / "a.db") as store:
        run_sweep(todo, store, RunOptions(cache_dir=str(cache)), progress=False)
        before = store.frame()
    (entry_path,) = cache.glob("*.pt")
    entry = torch.load(entry_path, weights_only=True)
    assert set(before["donor_digest"]) == {entry["digest"]}  # the runs name the donor they used

    entry["state"] = {k: torch.zeros_like(v) for k, v in entry["state"].items()}
    entry["test_acc"] = 1.0
    torch.save(entry, entry_path)  # a poisoned shared cache: zeroed weights, a perfect recorded accuracy
    CountingSignalNoise.source_draws = 0
    with Store(tmp_path / "b.db") as store:
        with pytest.warns(CacheWarning, match="does not match its digest"):
            run_sweep(todo, store, RunOptions(cache_dir=str(cache)), progress=False)
        after = store.frame()
    assert CountingSignalNoise.source_draws == 1  # retrained, not read
    assert list(after["source_acc"]) == list(before["source_acc"])
    assert list(after["target_acc"]) == list(before["target_acc"])
    assert list(after["donor_digest"]) == list(before["donor_digest"])  # two stores compared: same donors
    assert torch.load(entry_path, weights_only=True)["digest"] == entry["digest"]  # rewritten properly


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-run"])
def test_trained_and_cached_donors_record_the_same_digest(tmp_path, batched):
    options = RunOptions(cache_dir=str(tmp_path / "cache"), batched=batched)
    digests = []
    for name in ("trained.db", "cached.db"):
        with Store(tmp_path / name) as store:
            run_sweep(specs(), store, options, progress=False)
            digests.append(store.frame().set_index("key")["donor_digest"].sort_index())
    assert digests[0].notna().all() and digests[0].nunique() == 2  # one source model per seed
    assert digests[0].equals(digests[1])


# --------------------------------------------------------------------------- a broken installed plugin


def test_a_real_process_meets_a_broken_entry_point_with_one_warning_line(tmp_path):
    site = tmp_path / "site"
    (site / "ptb_broken").mkdir(parents=True)
    (site / "ptb_broken" / "__init__.py").write_text("raise ImportError('needs a library that is not installed')\n")
    info = site / "ptb_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ptb-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ptbench.strategies]\nbroken = ptb_broken\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    listed = ptbench("list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "scratch" in listed.stdout
    assert listed.stderr.splitlines() == [
        "ptbench:0: PluginWarning: entry point 'broken' (ptb_broken) of package ptb-broken 0.1 failed to import "
        "(ImportError: needs a library that is not installed); skipped it: fix or uninstall that package"
    ]
    ran = ptbench("run", "--task", TASK, "--strategy", "scratch", "--seeds", "1", "--store", "s.db", "--leaderboard", "lb",
                  "--quiet", "--no-cache", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    board = ptbench("leaderboard", "--store", "s.db", "--out", "lb2", cwd=tmp_path, env=env)
    assert board.returncode == 0, board.stderr
    assert (tmp_path / "lb2" / "README.md").exists()
