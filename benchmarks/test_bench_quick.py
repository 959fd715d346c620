"""The quick suite end to end, as a user runs it: `python -m ptbench run` in a fresh folder
(empty store, empty cache, leaderboard written), with the batched engine ("after") and with
every run on the per-run path ("before": --no-batch --no-cache, what ptbench did before the
engine). One round each: the per-run one takes minutes.

    python -m pytest benchmarks/test_bench_quick.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def _run(tmp_path, *extra: str) -> float:
    tmp_path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ptbench", "run", "--store", str(tmp_path / "runs.db"), "--leaderboard", str(tmp_path / "lb"),
         "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ},
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    print(f"\n{' '.join(extra) or 'default'}: {seconds:.1f} s; {proc.stderr.strip().splitlines()[-1]}")
    return seconds


@pytest.mark.parametrize("mode", ["after", "before"])
def test_quick_suite_end_to_end(benchmark, tmp_path, mode):
    extra = () if mode == "after" else ("--no-batch", "--no-cache")
    counter = iter(range(100))
    benchmark.pedantic(lambda: _run(tmp_path / f"round{next(counter)}", *extra), setup=None, rounds=1, iterations=1)
