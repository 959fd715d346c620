"""What a user notices when things go wrong during a sweep: a kill, Ctrl-C, a broken plugin,
a run past its time limit, two sweeps sharing one store. Real processes, real signals, real
training (tiny signal-noise variants), real SQLite.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ptbench
from ptbench.api import RunResult
from ptbench.results.store import Store, provenance

REPO = Path(__file__).resolve().parents[2]

#: Plugins with the faults a sweep must survive. `broken` fails while a file named "broken"
#: sits next to the plugin (a bug the user then fixes); `explode` trains with a term that
#: pushes the weights away from zero, so the loss runs off to -inf (divergence, not an
#: exception); `bad-notes` returns a plan note JSON cannot store; `inf-noise` is a task whose
#: training data holds an infinity, so its source model cannot train; `no-target-budget` is
#: a task with a bug that only shows once the source model is trained.
FAULTY_PLUGIN = '''
from pathlib import Path

from ptbench.api import Strategy, TransferPlan
from ptbench.tasks.signal_noise import SignalNoise


class Broken(Strategy):
    name = "broken"

    def plan(self, source, target, rng):
        if Path(__file__).with_name("broken").exists():
            raise RuntimeError("planning is broken")
        return TransferPlan.full(source, target)


class Explode(Strategy):
    name = "explode"
    params = {"push": [10.0]}

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def regularizer(self, model, reference, plan):
        return -self.push * sum((p ** 2).sum() for p in model.parameters())


class BadNotes(Strategy):
    name = "bad-notes"

    def plan(self, source, target, rng):
        plan = TransferPlan.full(source, target)
        plan.notes["chosen"] = object()
        return plan


class InfNoise(SignalNoise):
    name = "inf-noise"

    def data(self, role, streams):
        data = super().data(role, streams)
        data.train.x[0, 0, 0] = float("inf")
        return data


class NoTargetBudget(SignalNoise):
    name = "no-target-budget"

    def budget(self, role):
        if role == "target":
            raise KeyError("forgot the target budget")
        return super().budget(role)
'''

SUMMARY = re.compile(r"ptbench: (\d+) run\(s\) done, (\d+) already stored")


def summary(err: str) -> tuple[int, int]:
    """(runs done, runs already stored) from the closing summary line."""
    match = SUMMARY.search(err)
    assert match, err
    return int(match.group(1)), int(match.group(2))


def rows(store_path: Path) -> dict[str, tuple]:
    """key -> (status, target_acc, target_seconds, created_at), read straight from SQLite."""
    conn = sqlite3.connect(store_path)
    try:
        return {r[0]: r[1:] for r in conn.execute("SELECT key, status, target_acc, target_seconds, created_at FROM runs")}
    finally:
        conn.close()


def stored_count(store_path: Path) -> int:
    """Rows in a store another process is writing; 0 while it does not exist yet."""
    if not store_path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:  # schema not created yet, or a write in flight
        return 0


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m ptbench ARGS` as a real process, with Ctrl-C delivered as a user's would be
    (a test runner started in the background may have SIGINT ignored; its child must not)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ptbench", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_rows(store_path: Path, proc: subprocess.Popen, at_least: int, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while stored_count(store_path) < at_least:
        if proc.poll() is not None:
            pytest.fail(f"ptbench ended before storing {at_least} run(s): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {at_least} run(s) stored within {limit} s")
        time.sleep(0.02)


def sweep_args(task_spec, store: Path, strategies: list[str], seeds: int = 3, steps: int = 100) -> list[str]:
    args = ["run", "--task", task_spec(steps=steps), "--seeds", str(seeds), "--store", str(store), "--quiet", "--no-leaderboard"]
    for strategy in strategies:
        args += ["--strategy", strategy]
    return args


STRATEGIES = ["scratch", "full", "partial-filters[fraction=0.5,freeze=true]"]
RUNS = 3 * len(STRATEGIES)  # with --seeds 3


# --------------------------------------------------------------------------- kill and resume


def test_a_sweep_killed_with_sigkill_loses_no_finished_run_and_resumes_with_the_rest(tmp_path, task_spec, cli):
    store = tmp_path / "runs.db"
    # per-run path: runs are stored one by one, so the kill lands mid-sweep (the batched
    # engine trains these 9 runs as one program and stores them in one burst)
    args = sweep_args(task_spec, store, STRATEGIES) + ["--no-batch"]
    proc = start(args, tmp_path)
    wait_for_rows(store, proc, at_least=1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    kept = rows(store)  # what survived the kill (SQLite recovers its write-ahead log here)
    assert 1 <= len(kept) < RUNS
    assert all(status == "ok" for status, *_ in kept.values())

    again = cli(*args)  # the same command
    assert again.code == 0, again.err
    assert summary(again.err) == (RUNS - len(kept), len(kept))  # only what was missing ran
    after = rows(store)
    assert len(after) == RUNS and all(status == "ok" for status, *_ in after.values())
    for key, row in kept.items():  # the runs stored before the kill were not run again
        assert after[key] == row
    with Store(store) as opened:  # every (task, strategy, seed) exactly once
        runs = opened.frame()
    assert not runs.duplicated(["task", "strategy", "seed"]).any()
    assert len(runs) == RUNS


def test_ctrl_c_keeps_what_finished_and_says_how_to_resume(tmp_path, task_spec, cli):
    store = tmp_path / "runs.db"
    # per-run path, so that the interrupt lands while runs are still being stored one by one
    args = sweep_args(task_spec, store, STRATEGIES) + ["--no-batch"]
    proc = start(args, tmp_path)
    wait_for_rows(store, proc, at_least=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(
        r"ptbench: interrupted; (\d+) run\(s\) finished and stored \((\d+) of this sweep's 9 are in .*runs\.db\); "
        r"run the same command again to resume",
        last,
    )
    assert match, last
    finished, in_store = int(match.group(1)), int(match.group(2))
    assert finished == in_store == len(rows(store)) >= 1

    again = cli(*args)
    assert again.code == 0, again.err
    assert summary(again.err) == (RUNS - in_store, in_store)


# --------------------------------------------------------------------------- two writers


def test_two_processes_sharing_one_store_store_every_run_exactly_once(tmp_path, task_spec):
    store = tmp_path / "shared.db"
    # overlapping sweeps, started together: both want scratch; each has a strategy of its own
    first = start(sweep_args(task_spec, store, ["scratch", "full"], seeds=2), tmp_path)
    second = start(sweep_args(task_spec, store, ["scratch", "partial-filters[fraction=0.5,freeze=false]"], seeds=2), tmp_path)
    results = [proc.communicate(timeout=240) for proc in (first, second)]
    for proc, (_, err) in zip((first, second), results):
        assert proc.returncode == 0, err
        done, skipped = summary(err)
        assert done + skipped == 4

    with Store(store) as opened:
        runs = opened.frame()
    assert len(runs) == 6  # 2 seeds x {scratch, full, partial-filters}
    assert not runs.duplicated(["task", "strategy", "seed"]).any()
    assert set(runs["status"]) == {"ok"}
    assert sorted(runs["strategy"].unique()) == ["full", "partial-filters[fraction=0.5,freeze=False]", "scratch"]


def _hammer(path: str, worker: int, barrier) -> None:
    """Create-or-open the store at the same moment as the others, then write 20 runs every
    worker also writes and 10 of its own, each in its own commit."""
    barrier.wait()
    with Store(path) as store:
        for i in range(30):
            seed = i if i < 20 else 1000 * (worker + 1) + i
            store.write(RunResult(task="t", task_params={}, strategy="s", strategy_params={}, seed=seed, key=f"t|s|{seed}",
                                  target_acc=worker / 10))


def test_many_processes_creating_and_writing_one_store_at_once(tmp_path):
    path = tmp_path / "hammered.db"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(6)
    workers = [context.Process(target=_hammer, args=(str(path), w, barrier)) for w in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 6  # nobody saw "database is locked"
    with Store(path) as store:
        runs = store.frame()
    assert len(runs) == 20 + 6 * 10
    assert runs["key"].is_unique


# --------------------------------------------------------------------------- plugin faults


@pytest.fixture
def faulty_plugin(tmp_path) -> Path:
    path = tmp_path / "faulty.py"
    path.write_text(FAULTY_PLUGIN)
    (tmp_path / "broken").touch()
    return path


def test_a_failing_and_a_diverging_strategy_are_stored_reported_and_retried(tmp_path, cli, task_spec, faulty_plugin):
    store = tmp_path / "runs.db"
    args = ["run", "--plugin", str(faulty_plugin), "--task", task_spec(), "--seeds", "2", "--store", str(store),
            "--strategy", "scratch", "--strategy", "broken", "--strategy", "explode", "--quiet"]
    first = cli(*args)

    assert first.code == 1  # the sweep went on, and says it had failures
    assert first.err.strip().splitlines()[-1].startswith("ptbench: 6 run(s) done, 0 already stored, 2 diverged, 2 failed")
    assert "failed: " in first.err and "planning is broken" in first.err
    with Store(store) as opened:
        runs = opened.frame().set_index(["strategy", "seed"])
    assert list(runs.loc["scratch", "status"]) == ["ok", "ok"]
    assert list(runs.loc["broken", "status"]) == ["failed", "failed"]
    assert all("RuntimeError: planning is broken" in e for e in runs.loc["broken", "error"])
    assert list(runs.loc["explode", "status"]) == ["diverged", "diverged"]
    assert all(re.match(r"loss became -?(inf|nan) at step \d+", e) for e in runs.loc["explode", "error"])
    # the source model was trained, so what it scored is kept even for the failed runs
    assert runs.loc["broken", "source_acc"].notna().all()

    board = (tmp_path / "results" / "adhoc" / "README.md").read_text()
    failures = board.split("## Failed runs", 1)[1]
    assert failures.count("| failed ") == 2 and failures.count("| diverged ") == 2
    assert "planning is broken" in failures and "`explode`" in failures

    before = rows(store)
    (tmp_path / "broken").unlink()  # the user fixes the bug
    retry = cli(*args, "--retry-failed")
    assert retry.code == 1  # explode still diverges, and says so
    assert summary(retry.err) == (4, 2)  # only the four runs that had not ended ok
    after = rows(store)
    scratch_keys = [k for k in before if "|scratch" in k]
    assert all(after[k] == before[k] for k in scratch_keys)  # the ok runs were not touched
    with Store(store) as opened:
        runs = opened.frame().set_index(["strategy", "seed"])
    assert list(runs.loc["broken", "status"]) == ["ok", "ok"]
    assert list(runs.loc["explode", "status"]) == ["diverged", "diverged"]
    assert "broken" not in (tmp_path / "results" / "adhoc" / "README.md").read_text().split("## Failed runs", 1)[1]


def test_a_broken_task_fails_its_own_runs_and_the_sweep_goes_on(tmp_path, cli, task_spec, faulty_plugin):
    store = tmp_path / "runs.db"
    good = task_spec()
    infinite, unbudgeted = good.replace("signal-noise[", "inf-noise["), good.replace("signal-noise[", "no-target-budget[")
    result = cli("run", "--plugin", str(faulty_plugin), "--task", infinite, "--task", unbudgeted, "--task", good,
                 "--seeds", "1", "--strategy", "scratch", "--strategy", "full", "--store", str(store), "--quiet", "--no-leaderboard")
    assert result.code == 1 and "Traceback" not in result.err
    assert "2 diverged, 2 failed" in result.err.splitlines()[-1]
    with Store(store) as opened:
        runs = opened.frame()
    by_task = {name.split("[")[0]: group for name, group in runs.groupby("task")}
    assert list(by_task["inf-noise"]["status"]) == ["diverged", "diverged"]
    assert all(e.startswith("source model: Diverged: loss became nan") for e in by_task["inf-noise"]["error"])
    assert list(by_task["no-target-budget"]["status"]) == ["failed", "failed"]
    assert all("KeyError: 'forgot the target budget'" in e for e in by_task["no-target-budget"]["error"])
    assert list(by_task["signal-noise"]["status"]) == ["ok", "ok"] and by_task["signal-noise"]["target_acc"].notna().all()


def test_a_result_the_store_cannot_hold_fails_only_that_run(tmp_path, cli, task_spec, faulty_plugin):
    store = tmp_path / "runs.db"
    result = cli("run", "--plugin", str(faulty_plugin), "--task", task_spec(), "--seeds", "1", "--strategy", "bad-notes",
                 "--strategy", "scratch", "--store", str(store), "--quiet", "--no-leaderboard")
    assert result.code == 1 and "Traceback" not in result.err
    with Store(store) as opened:
        runs = opened.frame().set_index("strategy")
    assert runs.loc["bad-notes", "status"] == "failed"
    assert "could not be stored" in runs.loc["bad-notes", "error"] and "object" in runs.loc["bad-notes", "error"]
    assert runs.loc["scratch", "status"] == "ok"


def test_tensors_and_numpy_numbers_in_diagnostics_are_stored_as_numbers(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        store.write(RunResult(task="t", task_params={}, strategy="s", strategy_params={}, seed=0, key="t|s|0",
                              diagnostics={"norm": torch.tensor(0.5), "per_filter": torch.tensor([1.0, 2.0]), "n": np.int64(3)}))
        assert store.frame()["diagnostics"][0] == {"norm": 0.5, "per_filter": [1.0, 2.0], "n": 3}


def test_a_run_past_its_time_limit_is_stored_as_timeout_and_can_be_retried(tmp_path, cli, task_spec):
    store = tmp_path / "runs.db"
    args = ["run", "--task", task_spec(), "--seeds", "2", "--strategy", "scratch", "--strategy", "full",
            "--store", str(store), "--quiet", "--no-leaderboard"]
    limited = cli(*args, "--timeout", "0.000001")
    assert limited.code == 1
    assert limited.err.strip().splitlines()[-1].startswith("ptbench: 4 run(s) done, 0 already stored, 4 timeout")
    with Store(store) as opened:
        runs = opened.frame()
    assert set(runs["status"]) == {"timeout"}  # every run was tried: the sweep went on
    assert all("time limit" in e for e in runs["error"])
    assert runs["target_acc"].isna().all() and runs["source_acc"].notna().all()

    retry = cli(*args, "--retry-failed")
    assert retry.code == 0 and summary(retry.err) == (4, 0)
    with Store(store) as opened:
        assert set(opened.frame()["status"]) == {"ok"}


# --------------------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def test_every_run_records_what_produced_it(tmp_path, cli, task_spec):
    store = tmp_path / "runs.db"
    provenance.cache_clear()  # the checkout may have changed since an earlier test asked
    result = cli("run", "--task", task_spec(), "--seeds", "1", "--strategy", "scratch", "--store", str(store),
                 "--device", "cpu", "--quiet")
    assert result.code == 0, result.err
    with Store(store) as opened:
        run = opened.frame().iloc[0]
    assert run["ptbench_version"] == ptbench.__version__
    assert run["torch_version"] == torch.__version__
    assert run["python_version"] == platform.python_version()
    assert run["host"] == platform.node()
    assert run["device"] == "cpu"
    top = _git("rev-parse", "--show-toplevel")
    if top is not None and Path(top).resolve() == REPO:  # a checkout: the commit and whether it was dirty
        assert run["git_commit"] == _git("rev-parse", "HEAD")
        # ptbench's own outputs (leaderboards, results, cache) never count as dirty
        own = [":(exclude)leaderboard", ":(exclude)results", ":(exclude).ptbench-cache"]
        assert run["git_dirty"] == int(bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *own)))
        board = (tmp_path / "results" / "adhoc" / "README.md").read_text()
        assert f"ptbench {ptbench.__version__}" in board and run["git_commit"][:10] in board
    else:  # an installed copy: no commit is claimed
        assert run["git_commit"] is None
