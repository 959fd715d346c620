"""The reference sweep of the engine benchmarks, runnable on its own (gpu_check.sh uses it).

64 runs: 8 seeds x 8 strategy variants of one signal-noise task with d = 1000, n = 200
training examples per side, m = 20 filters per class, 500 full-batch GD steps and 2000 test
examples. One source model per seed, as the harness trains it. "End to end" is everything a
run costs: drawing the data, training source and target models, evaluating them and the
task's diagnostics; no store, no cache.

    python benchmarks/reference.py --device cuda --path batched
    python benchmarks/reference.py --path per-run --seeds 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field

import torch

from ptbench.api import RunSpec
from ptbench.tasks.signal_noise.engine import TwoLayerCNNEngine
from ptbench.sweep.execute import LocalExecutor
from ptbench.run.group import group_specs
from ptbench.run.options import RunOptions
from ptbench.strategies.full import Full
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.scratch import Scratch
from ptbench.tasks.signal_noise import SignalNoise

REFERENCE = dict(d=1000, n_source=200, n_target=200, m=20, steps=500, n_test=2000)
SEEDS = 8


def strategies() -> list:
    return [
        Scratch(),
        Full(freeze=False),
        Full(freeze=True),
        PartialFilters(fraction=0.25, freeze=False),
        PartialFilters(fraction=0.5, freeze=False),
        PartialFilters(fraction=0.75, freeze=False),
        PartialFilters(fraction=0.25, freeze=True),
        PartialFilters(fraction=0.5, freeze=True),
    ]


def reference_specs(seeds: int = SEEDS, **overrides) -> list[RunSpec]:
    task = SignalNoise(**{**REFERENCE, **overrides})
    return [RunSpec(task, s, seed) for seed in range(seeds) for s in strategies()]


@dataclass
class Timed:
    """What one sweep took: wall seconds end to end, and inside the engine's programs."""

    seconds: float
    runs: int
    engine_seconds: float = 0.0
    engine_flops: float = 0.0
    accuracies: list = field(default_factory=list)

    @property
    def ms_per_run(self) -> float:
        return 1e3 * self.seconds / self.runs

    @property
    def engine_gflops(self) -> float:
        return self.engine_flops / self.engine_seconds / 1e9 if self.engine_seconds else 0.0


class TimedEngine(TwoLayerCNNEngine):
    """The engine, with the time spent in its programs (training and evaluation) recorded."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seconds = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def train(self, jobs, budget, deadline=None):
        start = time.perf_counter()
        try:
            return super().train(jobs, budget, deadline)
        finally:
            self._sync()
            self.seconds += time.perf_counter() - start

    def accuracy(self, models, splits, loss):
        start = time.perf_counter()
        try:
            return super().accuracy(models, splits, loss)
        finally:
            self.seconds += time.perf_counter() - start


def run_reference(specs: list[RunSpec], path: str = "batched", device: str = "cpu", threads: int | None = 1) -> Timed:
    """Run `specs` on one path ("batched" or "per-run") and time it end to end."""
    engine = TimedEngine(threads=threads)
    original = SignalNoise.batched_engine
    SignalNoise.batched_engine = lambda self: engine  # type: ignore[method-assign]
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        options = RunOptions(device=device, batched=(path == "batched"), cache_dir=None, max_batch_runs=max(len(specs), 1))
        start = time.perf_counter()
        results = list(LocalExecutor().run(group_specs(specs), options))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        SignalNoise.batched_engine = original  # type: ignore[method-assign]
        torch.set_num_threads(before)
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise RuntimeError(f"{len(bad)} run(s) did not end ok, e.g. {bad[0].error}")
    return Timed(seconds, len(results), engine.seconds, engine.flops, [r.target_acc for r in results])


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 7, device: str = "cpu") -> float:
    """Median float32 matmul throughput with `threads` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        a @ b
        times = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    times.sort()
    return 2.0 * size**3 / times[len(times) // 2] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--path", choices=["batched", "per-run"], default="batched")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    specs = reference_specs(args.seeds)
    timed = run_reference(specs, args.path, args.device, args.threads)
    print(json.dumps({
        "device": args.device, "path": args.path, "runs": timed.runs, "seconds": round(timed.seconds, 3),
        "ms_per_run": round(timed.ms_per_run, 2), "engine_seconds": round(timed.engine_seconds, 3),
        "engine_gflops": round(timed.engine_gflops, 1),
        "mean_target_acc": round(sum(timed.accuracies) / len(timed.accuracies), 4),
    }))


if __name__ == "__main__":
    main()
