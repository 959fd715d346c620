"""The per-run path: one planned run trained on the harness's own training loop.

Any model, any strategy hook (regularisers, phases, planning on target data). The run was
planned by `protocol.plan_target` exactly as a batched run is; only its training differs.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

from ..api import RunResult, RunSpec, TransferModel, TransferPlan
from . import exits
from .donors import tracer
from .group import GroupState
from .protocol import donor_guard, snapshot
from .training import Diverged, RunTimeout, accuracy, train


def error_text(err: BaseException) -> str:
    """`Type: message (at file:line)`, one line, for a run's stored error; for a BaseException
    from plugin code (SystemExit, KeyboardInterrupt) who raised it: 'the strategy NAME exited
    the process with SystemExit(0) (at file:line)'."""
    if not isinstance(err, Exception):
        return exits.exit_text(err)
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}".replace("\n", " ")


def status_of(err: BaseException) -> str:
    """The stored status of a run that ended with `err`."""
    if isinstance(err, Diverged):
        return "diverged"
    if isinstance(err, RunTimeout):
        return "timeout"
    return "failed"


def failed_result(spec: RunSpec, err: BaseException, **fields) -> RunResult:
    text = str(err) if isinstance(err, (Diverged, RunTimeout)) else error_text(err)
    return RunResult.for_spec(spec, status=status_of(err), error=text, **fields)


@dataclass
class PlannedRun:
    """A run whose plan is applied to its target model, ready to train on either path."""

    spec: RunSpec
    state: GroupState
    target: TransferModel
    plan: TransferPlan
    plan_seconds: float  # planning counts in a run's seconds, on either path
    deadline: float | None  # time.monotonic() past which the run stops (from planning on)


def diagnostics_of(state: GroupState, run: PlannedRun, target_trajectory: list) -> dict:
    """The stored diagnostics: {"source": ..., "target": ...}, trajectories when traced, and
    what the strategy chose while planning (plan.notes) as "strategy"."""
    source = state.donors.get("source")
    out: dict = {}
    if source is not None and source.diagnostics:
        out["source"] = source.diagnostics
    target = state.task.diagnostics(run.target, state.target_data, run.plan)
    if target:
        out["target"] = target
    source_trajectory = source.trajectory if source is not None else []
    if source_trajectory or target_trajectory:
        out["trajectory"] = {"source": source_trajectory, "target": target_trajectory}
    if run.plan.notes:
        out["strategy"] = dict(run.plan.notes)
    return out


def train_planned(run: PlannedRun, device: str) -> RunResult:
    """Train one planned run on the per-run loop and measure it."""
    state, spec, strategy = run.state, run.spec, run.spec.strategy
    common = state.source_fields(device)
    donor = state.donor_model(strategy)
    budget = state.budget
    start = time.perf_counter()
    exits.now("training", [spec.key])
    try:
        with donor_guard(donor, strategy):
            reference = snapshot(donor) if strategy.has_weight_hook() or run.plan.penalty is not None else None
            trajectory, observer = tracer(state.task, state.target_data, run.plan)
            train(
                run.target, state.target_data.train, budget, state.streams.torch("target-batches"), run.plan, strategy, reference,
                deadline=run.deadline, observer=observer, observe_every=max(state.task.trace_every(), 1), donor=donor,
            )
        seconds = run.plan_seconds + time.perf_counter() - start
        return RunResult.for_spec(
            spec,
            target_acc=accuracy(run.target, state.target_data.test, budget.loss),
            target_train_acc=accuracy(run.target, state.target_data.train, budget.loss),
            target_seconds=seconds,
            diagnostics=diagnostics_of(state, run, trajectory),
            path="per-run",
            **common,
        )
    except BaseException as err:  # SystemExit, KeyboardInterrupt from plugin code fail the run too
        exits.reraise_users(err)
        return failed_result(spec, err, **common)
