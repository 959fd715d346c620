"""A plain per-run PyTorch loop, as a whole process: what a paper's code does, the baseline the
whole-process benchmarks (`test_bench_whole_process.py`) divide by.

Per seed: draw the target data (and the source data, and train the source model, only when a
strategy inherits from it), then per strategy build the target model, copy and freeze under
the plan, train with autograd (full-batch GD on the logistic loss, masked gradients) and
evaluate on the test split. Same data code and models as ptbench (so the same numbers up to
float rounding), no store, no diagnostics. Threads: torch's default (one per core), as a plain
script runs and as ptbench's workers use the machine (one process per core); `--threads 1`
is the one-thread loop that earlier rounds measured against (it uses one core of the two, and
is 1.3-1.6x slower here: a harsher baseline for nobody but ptbench's benefit).

    python benchmarks/plain_loop.py --seeds 64 --strategies scratch
    python benchmarks/plain_loop.py --seeds 8 --strategies reference [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reference import REFERENCE, strategies  # noqa: E402

from ptbench.rng import RandomStreams  # noqa: E402
from ptbench.strategies.scratch import Scratch  # noqa: E402
from ptbench.tasks.signal_noise import SignalNoise  # noqa: E402


def fit(model, x, y, steps: int, lr: float, freeze) -> None:
    for _ in range(steps):
        loss = F.softplus(-y * model(x)).mean()
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            grad = model.W.grad if freeze is None else model.W.grad.masked_fill(freeze, 0.0)
            model.W -= lr * grad


@torch.no_grad()
def accuracy(model, split) -> float:
    return float((torch.where(model(split.x) >= 0, 1.0, -1.0) == split.y).float().mean())


def run(seeds: int, chosen: list) -> list[float]:
    task = SignalNoise(**REFERENCE)
    budget = task.budget("target")
    accs = []
    needs_source = any(s.donor is not None for s in chosen)
    for seed in range(seeds):
        streams = RandomStreams(seed)
        target_data = task.data("target", streams)
        source = None
        if needs_source:
            source_data = task.data("source", streams)
            source = task.model("source", streams.torch("source-init"))
            fit(source, source_data.train.x, source_data.train.y, budget.steps, budget.lr, None)
            accuracy(source, source_data.test)
        for strategy in chosen:
            target = task.model("target", streams.torch("target-init"))
            plan = strategy.plan(source, target, streams.torch("plan"))
            if source is not None:
                plan.apply(source, target)
            fit(target, target_data.train.x, target_data.train.y, budget.steps, budget.lr, plan.freeze.get("W"))
            accs.append(accuracy(target, target_data.test))
    return accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--strategies", choices=["scratch", "reference"], default="reference")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own, one per core)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    chosen = [Scratch()] if args.strategies == "scratch" else strategies()
    accs = run(args.seeds, chosen)
    print(json.dumps({"runs": len(accs), "mean_target_acc": round(sum(accs) / len(accs), 4), "seconds": round(time.perf_counter() - START, 2)}))


if __name__ == "__main__":
    main()
