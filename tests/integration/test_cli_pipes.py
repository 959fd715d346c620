"""Real processes, the way a user meets them: a reader that closes the pipe early ends every
command quietly (no BrokenPipeError traceback), and an absurd --seeds is refused at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ptbench.api import RunResult
from ptbench.results.store import Store


@pytest.fixture
def store(tmp_path):
    """Many runs with many diagnostics, so that `show --json` and `export` print more than a
    pipe buffer holds (64 kB)."""
    path = tmp_path / "results" / "quick.db"
    with Store(path) as s:
        for t in range(20):
            for strategy in ("scratch", "full"):
                for seed in range(5):
                    s.write(RunResult(task=f"toy[d={t}]", task_params={"d": t}, strategy=strategy, strategy_params={}, seed=seed,
                                      key=f"toy{t}|{strategy}|{seed}", source_acc=0.9, target_acc=0.7 + 0.01 * seed,
                                      target_train_acc=1.0, source_seconds=0.1, target_seconds=0.1,
                                      diagnostics={"target": {f"d{i}": float(i) for i in range(3000)}}))
    return path


def _shell(command: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("command", [
    "show --json 'toy[d=3]|full|2'",
    "export",
    "export --flat --format json",
    "show --legend",
    "list",
    "leaderboard --format csv",
])
def test_a_closed_pipe_ends_quietly(store, tmp_path, command):
    # `| true` closes the pipe before ptbench has started: every write meets it closed
    closed = _shell(f"{sys.executable} -m ptbench {command} | true", tmp_path)
    assert closed.stderr == "", closed.stderr  # no BrokenPipeError traceback, no "Exception ignored" at exit
    assert closed.returncode == 141  # SIGPIPE's status, as a shell reports it (pipefail)
    # `| head -1` leaves after the first line: whether ptbench had finished writing by then is a race
    done = _shell(f"{sys.executable} -m ptbench {command} | head -1", tmp_path)
    assert done.stderr == "" and len(done.stdout.splitlines()) == 1
    assert done.returncode in (0, 141), done.returncode


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    done = _shell(f"{sys.executable} -m ptbench run --help | true", tmp_path)
    assert done.stderr == "" and done.returncode in (0, 141)


def test_a_billion_seeds_are_refused_in_one_line(tmp_path):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ptbench", "run", "--seeds", "1000000000"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "more than 1,000,000" in done.stderr
    assert not (tmp_path / "results").exists()
    print(f"refused in {time.perf_counter() - started:.2f} s, start-up included")
