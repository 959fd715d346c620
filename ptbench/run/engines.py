"""Batched engines: many runs of one architecture trained as one tensor program.

The per-run path (`ptbench.run.training`) trains any model under any strategy hook, one run at a
time. An engine trades that generality for speed on one architecture: it trains every run of
a task variant (seeds x strategy variants) together, with no Python loop over runs. A task
offers one through `Task.batched_engine()`; `ptbench.run.protocol.batched_refusal` sends it
the runs it `supports` and everything else (strategies with training hooks, plans the engine
cannot express) to the per-run path, so results never depend on which path ran them beyond
float rounding (tests/plugins/test_engine.py holds the two paths to the same weights and
accuracies). The engine is the task family's (`tasks/signal_noise/engine.py`); this module
is only the protocol between the harness and any engine.

Nothing here knows a task or a strategy: an engine sees initial models (the plan already
applied), training splits, freeze masks and the task's budget.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ptbench.api import Split, Strategy, TrainBudget, TransferModel, TransferPlan


@dataclass
class BatchJob:
    """One model to train: its initial weights (plan applied), its training split and plan.

    Jobs that pass the *same* split object share its precomputation (the strategies of one
    seed share their target data), which is why the engine groups jobs by split identity.
    `batches` is the generator the per-run loop would draw this job's minibatch order from
    (engines with minibatches must draw the same order: equal runs on either path);
    `strategy` carries the hooks an engine accepted in `supports` (`phases`,
    `batch_regularizer`); `donor` is the model the plan inherits from, read (never written)
    for a plan's `penalty` and for donor features."""

    model: TransferModel
    data: Split
    plan: TransferPlan | None = None
    batches: torch.Generator | None = None
    strategy: Strategy | None = None
    donor: TransferModel | None = None


@dataclass
class JobOutcome:
    """How one job ended: `ok`, or `diverged` with the step where the loss stopped being finite."""

    status: str = "ok"
    error: str | None = None


class BatchedEngine:
    """The contract between the runner and an engine (all methods must be overridden)."""

    #: Floating-point operations of the matrix products of the last `train` + `accuracy`
    #: calls (benchmarks report GFLOP/s from it).
    flops: float = 0.0
    #: torch CPU threads for the engine's work (None: leave torch's setting). The runner
    #: runs a whole batched unit (data, programs, diagnostics) under it.
    threads: int | None = None

    def supports(self, model: TransferModel, budget: TrainBudget, plan: TransferPlan | None, strategy: Strategy | None = None) -> str | None:
        """None when the engine trains this model under this budget, plan and strategy hooks
        (`phases`, `batch_regularizer`; None: a donor, no hooks) exactly as the per-run path
        would; otherwise the reason it does not (the run then goes per-run)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def train(self, jobs: Sequence[BatchJob], budget: TrainBudget, deadline: float | None = None) -> list[JobOutcome]:
        """Train every job's model in place. `deadline` (time.monotonic()) bounds the whole
        program: past it, `ptbench.run.training.RunTimeout` is raised for all jobs at once."""
        raise NotImplementedError  # pragma: no cover - abstract

    def accuracy(self, models: Sequence[TransferModel], splits: Sequence[Split], loss: str) -> list[float]:
        """Accuracy of models[i] on splits[i]; models that share a split object are evaluated
        in one product."""
        raise NotImplementedError  # pragma: no cover - abstract


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU thread count set to `count` for the block, then restored (None: as is)."""
    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class EngineChain(BatchedEngine):
    """Several engines as one: each job goes to the first engine that `supports` it (a task
    family's fast special-purpose engine first, a general one such as the vmapped engine
    after it), and a model is evaluated by the engine that trained it (one never trained
    here: by the first engine that supports it under a plain budget of the loss).

    `threads` is the first engine's (the runner sets it around a whole unit); each engine
    sets its own while it trains and evaluates."""

    def __init__(self, engines: Sequence[BatchedEngine]):
        if not engines:
            raise ValueError("an EngineChain needs at least one engine")
        self.engines = list(engines)
        self.threads = self.engines[0].threads
        #: model -> the engine that trained it (weak: models leave when their runs do)
        self.trained_by: "weakref.WeakKeyDictionary[TransferModel, BatchedEngine]" = weakref.WeakKeyDictionary()

    @property
    def flops(self) -> float:  # type: ignore[override]
        return sum(engine.flops for engine in self.engines)

    @flops.setter
    def flops(self, value: float) -> None:
        for engine in getattr(self, "engines", []):
            engine.flops = value

    def _first(self, model: TransferModel, budget: TrainBudget, plan: TransferPlan | None, strategy: Strategy | None) -> tuple[BatchedEngine | None, list[str]]:
        reasons = []
        for engine in self.engines:
            reason = engine.supports(model, budget, plan, strategy)
            if reason is None:
                return engine, reasons
            reasons.append(reason)
        return None, reasons

    def supports(self, model: TransferModel, budget: TrainBudget, plan: TransferPlan | None, strategy: Strategy | None = None) -> str | None:
        engine, reasons = self._first(model, budget, plan, strategy)
        return None if engine is not None else "; ".join(reasons)

    def train(self, jobs: Sequence[BatchJob], budget: TrainBudget, deadline: float | None = None) -> list[JobOutcome]:
        assigned: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            engine, reasons = self._first(job.model, budget, job.plan, job.strategy)
            if engine is None:
                raise ValueError(f"no engine of the chain trains job {i}: {'; '.join(reasons)}")
            assigned.setdefault(self.engines.index(engine), []).append(i)
        outcomes: list[JobOutcome | None] = [None] * len(jobs)
        for index, members in sorted(assigned.items()):
            engine = self.engines[index]
            for i, outcome in zip(members, engine.train([jobs[i] for i in members], budget, deadline)):
                outcomes[i] = outcome
                self.trained_by[jobs[i].model] = engine
        return [o if o is not None else JobOutcome() for o in outcomes]

    def accuracy(self, models: Sequence[TransferModel], splits: Sequence[Split], loss: str) -> list[float]:
        plain = TrainBudget(steps=1, lr=1.0, optimizer="gd", loss=loss)
        by_engine: dict[int, list[int]] = {}
        for i, model in enumerate(models):
            engine = self.trained_by.get(model)
            if engine is None:
                engine = self._first(model, plain, None, None)[0] or self.engines[-1]
            by_engine.setdefault(self.engines.index(engine), []).append(i)
        out = [0.0] * len(models)
        for index, members in sorted(by_engine.items()):
            accs = self.engines[index].accuracy([models[i] for i in members], [splits[i] for i in members], loss)
            for i, acc in zip(members, accs):
                out[i] = acc
        return out
