"""How much faster the batched engine runs a sweep than a plain per-run loop (pytest-benchmark).

    python -m pytest benchmarks --benchmark-enable            # everything, about 5-10 minutes
    PTBENCH_BENCH_THREADS=2 python -m pytest benchmarks --benchmark-enable

The machine is shared and noisy (a busy neighbour slows a multi-threaded matmul many
times over), so every measurement is repeated and reported as a median, and the float32
matmul throughput is measured first, in the same session, to say what the hardware gave.
Numbers go to benchmarks/RESULTS.md; nothing here asserts a speed.

(a) `plain per-run loop`: what a paper's code does: per seed, draw the data, train the
    source model, then per strategy build the target, copy and freeze under the plan, train
    with autograd (full-batch GD, masked gradients), evaluate. Same data code as ptbench.
(a') ptbench's own per-run path (diagnostics included), for reference.
(b) the batched engine through the harness, end to end (data, training, evaluation,
    diagnostics), no cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from reference import REFERENCE, matmul_gflops, reference_specs, run_reference  # noqa: E402

from ptbench.rng import RandomStreams  # noqa: E402

THREADS = int(os.environ.get("PTBENCH_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("PTBENCH_BENCH_ROUNDS", "3"))
#: Numbers gathered across the session, printed at its end for RESULTS.md.
REPORT: dict[str, float] = {}


@pytest.fixture(scope="session", autouse=True)
def report_at_end():
    yield
    print("\n\nptbench engine benchmark (threads=%d)" % THREADS)
    for key, value in REPORT.items():
        print(f"  {key:<48} {value:10.2f}")


def test_matmul_throughput(benchmark):
    """float32 matmul GFLOP/s on this machine now, with 1 and 2 threads (the ceiling)."""
    one = benchmark.pedantic(lambda: matmul_gflops(1), rounds=1, iterations=1)
    REPORT["matmul GFLOP/s, 1 thread"] = one
    REPORT["matmul GFLOP/s, 2 threads"] = matmul_gflops(2)
    benchmark.extra_info.update(gflops_1_thread=one, gflops_2_threads=REPORT["matmul GFLOP/s, 2 threads"])


def plain_per_run_loop(specs) -> list[float]:
    """(a): the loop a paper's code would be, with autograd; returns test accuracies."""
    task = specs[0].task
    budget = task.budget("target")
    by_seed: dict[int, list] = {}
    for spec in specs:
        by_seed.setdefault(spec.seed, []).append(spec.strategy)
    accs = []

    def fit(model, x, y, freeze):
        for _ in range(budget.steps):
            loss = F.softplus(-y * model(x)).mean()
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                grad = model.W.grad if freeze is None else model.W.grad.masked_fill(freeze, 0.0)
                model.W -= budget.lr * grad

    for seed, strategies in by_seed.items():
        streams = RandomStreams(seed)
        source_data, target_data = task.data("source", streams), task.data("target", streams)
        source = task.model("source", streams.torch("source-init"))
        fit(source, source_data.train.x, source_data.train.y, None)
        with torch.no_grad():
            (source(source_data.test.x).sign() == source_data.test.y).float().mean()
        for strategy in strategies:
            target = task.model("target", streams.torch("target-init"))
            plan = strategy.plan(source, target, streams.torch("plan"))
            plan.apply(source, target)
            fit(target, target_data.train.x, target_data.train.y, plan.freeze.get("W"))
            with torch.no_grad():
                accs.append(float((torch.where(target(target_data.test.x) >= 0, 1.0, -1.0) == target_data.test.y).float().mean()))
    return accs


def _with_threads(fn):
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_reference_sweep_plain_per_run_loop(benchmark):
    """(a) on the reference sweep (64 runs); one round: it takes a while."""
    specs = reference_specs()
    benchmark.pedantic(lambda: _with_threads(lambda: plain_per_run_loop(specs)), rounds=1, iterations=1)
    REPORT["(a) plain per-run loop, ms/run"] = 1e3 * benchmark.stats.stats.median / len(specs)


def test_reference_sweep_ptbench_per_run_path(benchmark):
    """(a') the harness's per-run path on 2 of the 8 seeds (16 runs), scaled per run."""
    specs = reference_specs(seeds=2)
    benchmark.pedantic(lambda: run_reference(specs, "per-run", threads=THREADS), rounds=1, iterations=1)
    REPORT["(a') ptbench per-run path, ms/run"] = 1e3 * benchmark.stats.stats.median / len(specs)


def test_reference_sweep_batched_engine(benchmark):
    """(b) the engine, end to end; GFLOP/s of its programs against the matmul ceiling."""
    specs = reference_specs()
    timings = []
    benchmark.pedantic(lambda: timings.append(run_reference(specs, "batched", threads=THREADS)), rounds=ROUNDS, iterations=1)
    per_run = 1e3 * benchmark.stats.stats.median / len(specs)
    REPORT["(b) batched engine end to end, ms/run"] = per_run
    best = min(timings, key=lambda t: t.seconds)
    REPORT["(b) engine programs only, ms/run"] = 1e3 * best.engine_seconds / best.runs
    REPORT["(b) engine GFLOP/s (its products / its time)"] = best.engine_gflops
    if "(a) plain per-run loop, ms/run" in REPORT:
        REPORT["speedup a/b (end to end)"] = REPORT["(a) plain per-run loop, ms/run"] / per_run
    if "(a') ptbench per-run path, ms/run" in REPORT:
        REPORT["speedup a'/b (end to end)"] = REPORT["(a') ptbench per-run path, ms/run"] / per_run
    benchmark.extra_info.update(ms_per_run=per_run, engine_gflops=best.engine_gflops)


@pytest.mark.parametrize("seeds", [1, 8, 32], ids=["R=8", "R=64", "R=256"])
def test_engine_scaling_with_runs(benchmark, seeds):
    specs = reference_specs(seeds=seeds)
    benchmark.pedantic(lambda: run_reference(specs, "batched", threads=THREADS), rounds=ROUNDS, iterations=1)
    REPORT[f"(b) R={len(specs)}, d={REFERENCE['d']}: ms/run"] = 1e3 * benchmark.stats.stats.median / len(specs)


@pytest.mark.parametrize("d", [250, 1000, 4000])
def test_engine_scaling_with_dimension(benchmark, d):
    specs = reference_specs(d=d)
    benchmark.pedantic(lambda: run_reference(specs, "batched", threads=THREADS), rounds=ROUNDS, iterations=1)
    REPORT[f"(b) R=64, d={d}: ms/run"] = 1e3 * benchmark.stats.stats.median / len(specs)
