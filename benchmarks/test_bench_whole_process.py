"""What users wait for, whole process: `python -m ptbench ...` from a fresh store against a
plain per-run PyTorch loop doing the same runs (`plain_loop.py`), side by side in one
pytest-benchmark session (pytest-benchmark; nothing here asserts a speed).

    python -m pytest benchmarks/test_bench_whole_process.py --benchmark-enable -s
    PTBENCH_BENCH_BEFORE=/path/to/old/venv/bin/python python -m pytest benchmarks/test_bench_whole_process.py --benchmark-enable -s

Lines (one round each, but the ptbench seed sweeps: the median of three, each from a fresh
store; whole processes are long and the machine is the measurement):
- start-up: `python -c "import torch"` (the floor every process pays), and ptbench's own
  import cost on top of torch for a `run` (measured inside one process);
- the 64-seed scratch sweep of the issue: ptbench against the plain loop (which trains no
  source model either: scratch needs none);
- the reference sweep, 8 seeds x 8 strategies with source training: ptbench against the
  plain loop, whole process and without start-up (each minus the `import torch` floor);
- each plain loop twice: with torch's default threads (one per core: what a plain script
  does, and the machine ptbench's workers use, so the ratios of the goals), and with one
  thread (the baseline of earlier rounds, kept for comparison: it leaves a core idle);
- the quick and images suites, `python -m ptbench run [--suite images]`.
With PTBENCH_BENCH_BEFORE, the same ptbench commands also run under that interpreter (an
environment with the code before a change installed): the before/after of RESULTS.md.
The session's table of numbers and ratios is printed at its end; write the 1-minute load
next to it (`uptime`), and run nothing else meanwhile.

Every process here runs as on a default Python, which keeps the bytecode it compiles: the
session compiles each side's sources first (`compileall`) and the measured processes run
without PYTHONDONTWRITEBYTECODE, which some machines set (this project's does) and which
makes every process compile ptbench from source again (0.1-0.15 s; the plain loop imports
ptbench's data code and models too). The import-cost line is also measured that way, from
source, for comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REFERENCE_TASK = "signal-noise[d=1000,n_source=200,n_target=200,m=20,steps=500,n_test=2000]"
REFERENCE_STRATEGIES = [
    "scratch", "full[freeze=[false,true]]", "partial-filters[fraction=[0.25,0.5,0.75],freeze=false]",
    "partial-filters[fraction=[0.25,0.5],freeze=true]",
]
BEFORE = os.environ.get("PTBENCH_BENCH_BEFORE")
PYTHONS = {"after": sys.executable, **({"before": BEFORE} if BEFORE else {})}
REPORT: dict[str, float] = {}
#: Rounds of each ptbench seed sweep (the median is reported); the plain loops and suites run once.
SWEEP_ROUNDS = 3
#: The plain loop's torch threads: its default (one per core) and one.
PLAIN_THREADS = {"default threads": [], "one thread": ["--threads", "1"]}
#: The measured processes' environment: a default Python's bytecode handling (see above).
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(HERE)}


@pytest.fixture(scope="session", autouse=True)
def bytecode_cached():
    """Compile each side's ptbench (and the plain loop) to bytecode once, before anything is
    timed, as a first run on a default Python would."""
    where = "import os, ptbench, ptbench.tasks, ptbench.strategies; print(*(os.path.dirname(m.__file__) for m in (ptbench, ptbench.tasks, ptbench.strategies)))"
    for python in PYTHONS.values():
        dirs = subprocess.run([python, "-c", where], capture_output=True, text=True, check=True, env=ENV).stdout.split()
        subprocess.run([python, "-m", "compileall", "-q", *dirs, str(HERE)], check=True, capture_output=True, env=ENV)


@pytest.fixture(scope="session", autouse=True)
def report_at_end():
    yield
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"\n\nptbench whole-process benchmark (1-minute load at the end: {load})")
    for key, value in REPORT.items():
        print(f"  {key:<64} {value:10.2f}")
    _ratios()


def _ratios() -> None:
    floor = REPORT.get("start-up: python -c 'import torch', s")
    for label in ("scratch x 64 seeds", "reference 8 seeds x 8 strategies"):
        for loop in PLAIN_THREADS:
            plain = REPORT.get(f"{label}: plain loop, {loop}, s")
            for side in PYTHONS:
                mine = REPORT.get(f"{label}: ptbench {side}, s")
                if plain and mine:
                    print(f"  {label}: plain ({loop}) / ptbench {side}, whole process{'':<2} {plain / mine:8.1f}x")
                    if floor and mine > floor:
                        print(f"  {label}: plain ({loop}) / ptbench {side}, without start-up {(plain - floor) / (mine - floor):8.1f}x")


def _timed(cmd: list[str], cwd: Path) -> float:
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    return seconds


def _ptbench(python: str, tmp: Path, *args: str) -> list[str]:
    return [python, "-m", "ptbench", "run", "--store", str(tmp / "runs.db"), "--leaderboard", str(tmp / "lb"),
            "--cache-dir", str(tmp / "cache"), "--quiet", *args]


def _strategy_args() -> list[str]:
    return [arg for spec in REFERENCE_STRATEGIES for arg in ("--strategy", spec)]


def _once(benchmark, fn):
    return benchmark.pedantic(fn, rounds=1, iterations=1)


def _median_of_fresh(benchmark, make_cmd, tmp: Path, rounds: int = SWEEP_ROUNDS) -> float:
    """The median of `rounds` runs of a short command, each from a fresh store and cache
    (`make_cmd(folder)`): a 3-5 s process moves with the machine's passing spells far more
    than a 30-50 s one, whose single round averages them out."""
    times: list[float] = []

    def one() -> None:
        folder = tmp / f"round-{len(times)}"
        times.append(_timed(make_cmd(folder), folder))

    benchmark.pedantic(one, rounds=rounds, iterations=1)
    return sorted(times)[len(times) // 2]


def test_startup_torch_floor(benchmark, tmp_path):
    """The least of three starts: the session's first process can start cold (4.5 s once,
    against 1.7-2.3 s), and a floor inflated by that would flatter the ratios without it."""
    times: list[float] = []
    benchmark.pedantic(lambda: times.append(_timed([sys.executable, "-c", "import torch"], tmp_path)), rounds=3, iterations=1)
    REPORT["start-up: python -c 'import torch', s"] = min(times)


def test_startup_ptbench_import_cost_on_top_of_torch(benchmark, tmp_path):
    code = (
        "import time; import torch; t = time.perf_counter(); "
        "import ptbench.cli.run, ptbench.sweep.sweep, ptbench.run.runner, ptbench.results.store; "
        "from ptbench.registry import default_registry; r = default_registry(); r.task('signal-noise'); r.strategy('scratch'); "
        "print(time.perf_counter() - t)"
    )

    def measure(env) -> float:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
        return float(out.strip().splitlines()[-1])

    # from source: no bytecode written, none found (an empty cache folder)
    source = {**ENV, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "no-bytecode")}
    REPORT["start-up: ptbench's imports on top of torch, compiled from source, s"] = measure(source)
    REPORT["start-up: ptbench's imports on top of torch, s"] = _once(benchmark, lambda: measure(ENV))


@pytest.mark.parametrize("loop", list(PLAIN_THREADS))
def test_scratch_64_seeds_plain_loop(benchmark, tmp_path, loop):
    cmd = [sys.executable, str(HERE / "plain_loop.py"), "--seeds", "64", "--strategies", "scratch", *PLAIN_THREADS[loop]]
    REPORT[f"scratch x 64 seeds: plain loop, {loop}, s"] = _once(benchmark, lambda: _timed(cmd, tmp_path))


@pytest.mark.parametrize("side", list(PYTHONS))
def test_scratch_64_seeds_ptbench(benchmark, tmp_path, side):
    make = lambda folder: _ptbench(PYTHONS[side], folder, "--task", REFERENCE_TASK, "--strategy", "scratch", "--seeds", "64")  # noqa: E731
    REPORT[f"scratch x 64 seeds: ptbench {side}, s"] = _median_of_fresh(benchmark, make, tmp_path)


@pytest.mark.parametrize("loop", list(PLAIN_THREADS))
def test_reference_plain_loop(benchmark, tmp_path, loop):
    cmd = [sys.executable, str(HERE / "plain_loop.py"), "--seeds", "8", "--strategies", "reference", *PLAIN_THREADS[loop]]
    REPORT[f"reference 8 seeds x 8 strategies: plain loop, {loop}, s"] = _once(benchmark, lambda: _timed(cmd, tmp_path))


@pytest.mark.parametrize("side", list(PYTHONS))
def test_reference_ptbench(benchmark, tmp_path, side):
    make = lambda folder: _ptbench(PYTHONS[side], folder, "--task", REFERENCE_TASK, *_strategy_args(), "--seeds", "8")  # noqa: E731
    REPORT[f"reference 8 seeds x 8 strategies: ptbench {side}, s"] = _median_of_fresh(benchmark, make, tmp_path)


@pytest.mark.parametrize("side", list(PYTHONS))
@pytest.mark.parametrize("suite", ["quick", "images"])
def test_suite(benchmark, tmp_path, suite, side):
    cmd = _ptbench(PYTHONS[side], tmp_path, "--suite", suite)
    REPORT[f"{suite} suite: ptbench {side}, s"] = _once(benchmark, lambda: _timed(cmd, tmp_path))
