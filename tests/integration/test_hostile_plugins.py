"""Plugins, files and signals that try to forge a verdict, lose a result or outlive ptbench.
Real processes throughout: a real `os._exit` in a checking process and in sweep workers, a
real background `sleep`, real hung calls under `--timeout`, real SIGTERM, SIGINT and SIGKILL
sent to a `--jobs 2` parent, and its process tree looked at afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptbench.api import RunSpec
from ptbench.cli.submit import _run_worker, verdict
from ptbench.results.store import Store
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.strategies.full import Full
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.execute import LocalExecutor
from ptbench.tasks.signal_noise import SignalNoise

#: T, the smoke suite's task: a run takes a few hundredths of a second.
T_VALUES = dict(d=100, m=10, n_source=40, n_target=20, n_test=200, steps=50)


def spec_of(**overrides) -> str:
    values = {**T_VALUES, **overrides}
    return "signal-noise[" + ",".join(f"{k}={v}" for k, v in values.items()) + "]"


T = spec_of()


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models, busy machine


# --------------------------------------------------------------------------- processes


def children(pid: int) -> dict[int, int]:
    """pid -> ppid of every process, from /proc (psutil where installed)."""
    try:
        import psutil

        return {p.pid: p.ppid() for p in psutil.process_iter()}
    except ImportError:
        table = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        table[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        return table


def descendants(pid: int) -> set[int]:
    table, found, todo = children(pid), set(), [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that never reaps is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pids: set[int], limit: float) -> set[int]:
    """The pids still alive after up to `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        left = {pid for pid in pids if alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ptbench", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stored(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def wait_until(condition, proc: subprocess.Popen, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"ptbench ended first: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"not within {limit} s")
        time.sleep(0.05)


def statuses(out: str) -> dict[str, tuple[str, str]]:
    """{check: (pass | FAIL | n/a, detail)} from submit's report."""
    return {m.group(2): (m.group(1), m.group(3)) for m in re.finditer(r"^  (pass|FAIL|n/a)\s+(\w+)\s+(.*)$", out, re.M)}


# --------------------------------------------------------------------------- 1. verdicts need evidence


def test_submit_of_a_file_that_os_exits_at_import_fails_instead_of_passing_zero_checks(cli, tmp_path):
    (tmp_path / "quits.py").write_text("import os\nos._exit(0)\n")
    result = cli("submit", str(tmp_path / "quits.py"))
    assert result.code == 1, result.out + result.err
    assert "0 checks: 0 passed" not in result.out
    assert statuses(result.out)["import"][0] == "FAIL"
    assert "exited with status 0 while importing quits.py" in result.out


EXITS_IN_PLAN = '''
import os, sys
from ptbench.api import Strategy


class ExitsInPlan(Strategy):
    name = "exits-in-plan"

    def plan(self, source, target, rng):
        {call}
'''


@pytest.mark.parametrize("call, words", [
    ("os._exit(0)", "the checking process exited with status 0 while this check ran"),
    ("sys.exit(0)", "the strategy exits-in-plan exited the process with SystemExit(0)"),
], ids=["os._exit", "sys.exit"])
def test_submit_of_a_strategy_whose_plan_exits_fails_naming_the_check_in_progress(cli, tmp_path, call, words):
    path = tmp_path / "exits.py"
    path.write_text(EXITS_IN_PLAN.format(call=call))
    result = cli("submit", str(path))
    assert result.code == 1, result.out + result.err
    found = statuses(result.out)
    assert found["name"][0] == "pass" and found["plan_shapes"] == ("FAIL", found["plan_shapes"][1])
    assert words in found["plan_shapes"][1]
    assert found["finished_run"][0] == "FAIL"  # not run, or failed: never a pass without a result


STARTS_A_SLEEP = '''
import pathlib, subprocess
from ptbench.api import Strategy, TransferPlan

sleeper = subprocess.Popen(["sleep", "300"])
pathlib.Path(__file__).with_name("sleep.pid").write_text(str(sleeper.pid))
pathlib.Path("results").mkdir(exist_ok=True)  # relative: the checking process's scratch folder
pathlib.Path("results", "litter.txt").write_text("written at import")


class Sleeper(Strategy):
    name = "sleeper"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)
'''


def test_submit_kills_what_the_plugin_started_and_writes_nothing_where_the_user_is(cli, tmp_path):
    path = tmp_path / "sleeper.py"
    path.write_text(STARTS_A_SLEEP)
    began = time.monotonic()
    result = cli("submit", str(path))
    took = time.monotonic() - began
    assert result.code == 0, result.out + result.err
    assert took < 60, "submit waited for the plugin's background process"
    sleeper = int((tmp_path / "sleep.pid").read_text())
    assert not wait_gone({sleeper}, 5), "the plugin's background sleep outlived submit"
    assert not (tmp_path / "results").exists() and not (tmp_path / "__pycache__").exists()


HANGS_IN_PLAN = '''
import os, pathlib, time
from ptbench.api import Strategy

pathlib.Path(__file__).with_name("checker.pid").write_text(str(os.getpid()))


class Hangs(Strategy):
    name = "hangs"

    def plan(self, source, target, rng):
        time.sleep(600)
'''


def test_a_checking_process_past_its_time_limit_fails_the_check_in_progress_and_is_killed(tmp_path):
    path = tmp_path / "hangs.py"
    path.write_text(HANGS_IN_PLAN)
    records, crash = _run_worker(path, timeout=60, plugins=[], limit=8)
    results, passed = verdict(path, records, crash)
    found = {r["check"]: (r["passed"], r["detail"]) for r in results}
    assert not passed
    assert found["plan_shapes"] == (False, "the checking process was still running after 8 s and was stopped while this check ran")
    assert found["finished_run"][0] is False
    assert not wait_gone({int((tmp_path / "checker.pid").read_text())}, 5)


BEHAVES_ONLY_WHEN_CHECKED = '''
import os
from ptbench.api import Strategy, TransferPlan


class Sly(Strategy):
    """Passes every check (it can tell the checking process by its scratch TMPDIR), then
    ends the process that runs the suite for --add."""

    name = "sly"

    def plan(self, source, target, rng):
        if "ptbench-submit-" not in os.environ.get("TMPDIR", ""):
            os._exit(0)
        return TransferPlan.full(source, target)
'''


def test_add_copies_nothing_when_the_suite_run_exits_its_process(cli, tmp_path):
    path = tmp_path / "sly.py"
    path.write_text(BEHAVES_ONLY_WHEN_CHECKED)
    into = tmp_path / "into"
    into.mkdir()
    suite = tmp_path / "mysuite.toml"
    suite.write_text(f'seeds = 1\nbaseline = "scratch"\ntasks = ["{T}"]\nstrategies = ["scratch"]\n')
    result = cli("submit", str(path), "--add", "--into", str(into), "--suite", str(suite), "--store", str(tmp_path / "r.db"),
                 "--leaderboard", str(tmp_path / "lb"))
    assert result.code == 1, result.out + result.err
    assert "6 checks: 6 passed" in result.out  # the verdict passed; the suite run did not
    assert "not added" in result.err and not list(into.iterdir()) and "sly" not in suite.read_text()
    with Store(tmp_path / "r.db") as store:
        runs = store.frame().set_index("strategy")
    assert runs.loc["scratch", "status"] == "ok"
    assert runs.loc["sly", "status"] == "failed" and "worker process exited with status 0" in runs.loc["sly", "error"]


# --------------------------------------------------------------------------- 2. exits are failures


OS_EXIT_STRATEGY = '''
import os
from ptbench.api import Strategy


class Quits(Strategy):
    name = "quits"

    def plan(self, source, target, rng):
        os._exit(0)
'''


def test_os_exit_in_one_strategy_under_jobs_2_fails_only_it_and_keeps_the_groups_other_runs(cli, tmp_path):
    plugin = tmp_path / "quits.py"
    plugin.write_text(OS_EXIT_STRATEGY)
    store = tmp_path / "runs.db"
    result = cli("run", "--plugin", str(plugin), "--task", T, "--seeds", "2", "--strategy", "scratch", "--strategy", "full",
                 "--strategy", "quits", "--jobs", "2", "--no-batch", "--store", str(store), "--quiet", "--no-leaderboard")
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.strip().splitlines()[-1].startswith("ptbench: 6 run(s) done, 0 already stored, 2 failed")
    with Store(store) as opened:
        runs = opened.frame().set_index(["strategy", "seed"])
    assert list(runs.loc["quits", "status"]) == ["failed", "failed"]
    assert all(e.startswith("the worker process exited with status 0 while running this run (planning it)") for e in runs.loc["quits", "error"])
    assert not any("out of memory" in e for e in runs.loc["quits", "error"])
    # scratch and full of the same groups: ok, with the numbers this process gets for them
    task = SignalNoise(**T_VALUES)
    here = {(r.strategy, r.seed): r for r in LocalExecutor().run(group_specs(
        [RunSpec(task, s, seed) for s in (Scratch(), Full()) for seed in (0, 1)]), RunOptions(batched=False))}
    for (strategy, seed), expected in here.items():
        assert runs.loc[(strategy, seed), "status"] == "ok"
        assert runs.loc[(strategy, seed), "target_acc"] == expected.target_acc


BAD_CHECK_DATA_TASK = '''
import os, sys
from ptbench.tasks.signal_noise import SignalNoise


class BadCheck(SignalNoise):
    name = "bad-check"
    params = {**SignalNoise.params, "how": ["raises", "exits", "os-exits"]}

    def check_data(self):
        if self.how == "raises":
            raise RuntimeError("a bug in check_data")
        if self.how == "exits":
            sys.exit(3)
        os._exit(0)
'''


@pytest.mark.parametrize("how", ["raises", "exits"])
def test_a_check_data_that_raises_or_exits_ends_neither_the_sweep_nor_its_other_tasks(cli, tmp_path, how):
    """The pre-flight asks each task's `check_data()`: only a PtbenchError (data not there)
    stops the sweep; a plugin's bug or sys.exit there is not the sweep's end, and the other
    task's runs are done and stored."""
    plugin = tmp_path / "bad_check.py"
    plugin.write_text(BAD_CHECK_DATA_TASK)
    store = tmp_path / "runs.db"
    bad = "bad-check[" + ",".join(f"{k}={v}" for k, v in {**T_VALUES, "how": how}.items()) + "]"
    result = cli("run", "--plugin", str(plugin), "--task", bad, "--task", T, "--seeds", "1", "--strategy", "scratch",
                 "--store", str(store), "--quiet", "--no-leaderboard")
    assert "Traceback" not in result.err and result.code == 0, result.err
    with Store(store) as opened:
        runs = opened.frame()
    assert sorted(runs["status"]) == ["ok", "ok"] and len(runs) == 2


# --------------------------------------------------------------------------- 3. timeouts bound everything


def test_timeout_stops_a_source_model_that_would_train_for_hours(cli, tmp_path):
    store = tmp_path / "runs.db"
    began = time.monotonic()
    result = cli("run", "--task", spec_of(steps=10_000_000), "--seeds", "1", "--strategy", "full", "--timeout", "3",
                 "--store", str(store), "--quiet", "--no-leaderboard", "--no-cache")
    assert time.monotonic() - began < 30
    assert result.code == 1, result.err
    with Store(store) as opened:
        [run] = opened.frame().to_dict("records")
    assert run["status"] == "timeout" and run["error"].startswith("time limit: still obtaining its source model")


HANGS_STRATEGY = '''
import time
from ptbench.api import Strategy


class Hangs(Strategy):
    name = "hangs"

    def plan(self, source, target, rng):
        time.sleep(600)
'''


def test_timeout_stops_a_hung_plan_and_runs_the_groups_other_runs_again(cli, tmp_path):
    plugin = tmp_path / "hangs.py"
    plugin.write_text(HANGS_STRATEGY)
    store = tmp_path / "runs.db"
    began = time.monotonic()
    result = cli("run", "--plugin", str(plugin), "--task", T, "--seeds", "1", "--strategy", "scratch", "--strategy", "hangs",
                 "--strategy", "full", "--timeout", "1", "--store", str(store), "--quiet", "--no-leaderboard")
    assert time.monotonic() - began < 40
    assert result.code == 1, result.err
    with Store(store) as opened:
        runs = opened.frame().set_index("strategy")
    assert runs.loc["hangs", "status"] == "timeout" and runs.loc["hangs", "error"].startswith("time limit: still planning it")
    assert runs.loc["scratch", "status"] == "ok" and runs.loc["full", "status"] == "ok"


# --------------------------------------------------------------------------- 4. signals


def long_sweep(store: Path) -> list[str]:
    return ["run", "--task", spec_of(steps=400), "--seeds", "10", "--strategy", "scratch", "--strategy", "full", "--jobs", "2",
            "--no-batch", "--no-cache", "--store", str(store), "--quiet", "--no-leaderboard"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_jobs_2_parent_alone_stores_what_arrived_and_leaves_no_process(tmp_path, signum):
    store = tmp_path / "runs.db"
    proc = start(long_sweep(store), tmp_path)
    wait_until(lambda: stored(store) >= 1, proc)
    tree = descendants(proc.pid)
    assert len(tree) >= 2  # the workers (and the forkserver they are forked from)
    proc.send_signal(signum)  # to the parent only, not to its process group
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(r"ptbench: interrupted; (\d+) run\(s\) finished and stored \((\d+) of this sweep's 20 are in .*"
                         r"runs\.db\); run the same command again to resume", last)
    assert match, last
    assert int(match.group(1)) == int(match.group(2)) == stored(store) >= 1
    assert not wait_gone(tree, 5), "a worker outlived the sweep"


def test_kill_9_of_a_jobs_2_parent_leaves_no_worker_alive(tmp_path):
    store = tmp_path / "runs.db"
    proc = start(long_sweep(store), tmp_path)
    wait_until(lambda: stored(store) >= 1, proc)
    tree = descendants(proc.pid)
    assert len(tree) >= 2
    proc.kill()
    proc.wait(10)
    assert not wait_gone(tree, 10), "a worker outlived its SIGKILLed parent by 10 s"
