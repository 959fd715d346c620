"""The batched path: many planned runs (or donors) of one task variant as one engine program.

Same data, same initialisations, same plans (`protocol.plan_target`) and the same stored
fields as the per-run path; only training and evaluation are one tensor program instead of
a loop. Timing fields mean what they mean per run, averaged: a batched run's
`target_seconds` is (planning + the program) / the runs in it, and a donor's
`source_seconds` the donor program's time / the donors in it. `--timeout` bounds a program
at the per-run limit times its runs; past it, every run of the program is stored `timeout`.
"""

from __future__ import annotations

import time

from ..api import RunResult, TaskData, TransferModel
from . import exits
from .engines import BatchedEngine, BatchJob
from .group import DONORS, GroupState, Trained, batch_stream
from .per_run import PlannedRun, diagnostics_of, error_text, failed_result
from .protocol import deadline_after
from .training import RunTimeout


def train_donors(engine: BatchedEngine, donor: str, missing: list[tuple[GroupState, TransferModel, TaskData]]) -> list[Trained | None]:
    """Train one donor per (state, fresh model, data) as one program; None where a state
    failed (its failure says why)."""
    if not missing:
        return []
    task = missing[0][0].task
    budget = task.budget(DONORS[donor][0])
    start = time.perf_counter()
    exits.now("source model", [spec.key for state, _, _ in missing for spec in state.group.specs])
    try:
        outcomes = engine.train([BatchJob(model, data.train, batches=state.streams.torch(batch_stream(donor))) for state, model, data in missing], budget)
    except BaseException as err:  # SystemExit, KeyboardInterrupt from plugin code fail the runs too
        exits.reraise_users(err)
        for state, _, _ in missing:
            state.fail("failed", f"source model: {error_text(err)}")
        return [None] * len(missing)
    seconds = (time.perf_counter() - start) / len(missing)
    accs = held_out_accuracies(engine, [model for _, model, _ in missing], [data.test for _, _, data in missing],
                           [state for state, _, _ in missing], budget.loss)
    out: list[Trained | None] = []
    for (state, model, data), outcome, acc in zip(missing, outcomes, accs):
        if outcome.status != "ok":
            state.fail(outcome.status, f"source model: Diverged: {outcome.error}")
            out.append(None)
            continue
        if isinstance(acc, BaseException):
            state.fail("failed", f"source model: test data: {error_text(acc)}")
            out.append(None)
            continue
        try:
            out.append(Trained(model, acc, seconds, task.diagnostics(model, data, None), []))
        except BaseException as err:
            exits.reraise_users(err)
            state.fail("failed", f"source model: {error_text(err)}")
            out.append(None)
    return out


def held_out_accuracies(engine: BatchedEngine, models: list, splits: list, states: list[GroupState], loss: str) -> list:
    """Test accuracy per model, or the error that kept its group from having one. A task may
    draw its test split only when it is first read (signal-noise does: `DeferredPatchSplit`),
    so an error in that draw surfaces here, in one program of many groups; it fails that
    group's runs, as an error in drawing a group's data always did, not the whole program.
    All at once first (the numbers the engine always gave); only after an error, group by
    group, to find whose."""
    try:
        return engine.accuracy(models, splits, loss)
    except BaseException as err:
        exits.reraise_users(err)
    out: list = [None] * len(models)
    members: dict[int, list[int]] = {}
    for i, state in enumerate(states):
        members.setdefault(id(state), []).append(i)
    for group in members.values():
        try:
            accs = engine.accuracy([models[i] for i in group], [splits[i] for i in group], loss)
        except BaseException as err:
            exits.reraise_users(err)
            accs = [err] * len(group)
        for i, acc in zip(group, accs):
            out[i] = acc
    return out


def train_runs(engine: BatchedEngine, runs: list[PlannedRun], options) -> list[RunResult]:
    """Train planned runs as one program; planning time since the first run began counts."""
    if not runs:
        return []
    device = options.device
    budget = runs[0].state.budget
    started = time.perf_counter() - sum(run.plan_seconds for run in runs)
    commons = [run.state.source_fields(device) for run in runs]
    deadline = deadline_after(options.timeout, len(runs))
    exits.now("batched training", [run.spec.key for run in runs])
    try:
        jobs = [
            BatchJob(run.target, run.state.target_data.train, run.plan, batches=run.state.streams.torch("target-batches"),
                     strategy=run.spec.strategy, donor=run.state.donor_model(run.spec.strategy))
            for run in runs
        ]
        outcomes = engine.train(jobs, budget, deadline)
    except RunTimeout as err:
        return [
            RunResult.for_spec(run.spec, status="timeout", error=f"{err} ({len(runs)} runs, {options.timeout:g} s each)", **common)
            for run, common in zip(runs, commons)
        ]
    except BaseException as err:
        exits.reraise_users(err)
        return [
            RunResult.for_spec(run.spec, status="failed", error=f"batched program: {error_text(err)}", **common)
            for run, common in zip(runs, commons)
        ]
    seconds = (time.perf_counter() - started) / len(runs)
    models = [run.target for run in runs]
    test = held_out_accuracies(engine, models, [run.state.target_data.test for run in runs], [run.state for run in runs], budget.loss)
    train_acc = engine.accuracy(models, [run.state.target_data.train for run in runs], budget.loss)
    results = []
    for run, outcome, common, acc, tacc in zip(runs, outcomes, commons, test, train_acc):
        if outcome.status != "ok":
            results.append(RunResult.for_spec(run.spec, status=outcome.status, error=outcome.error, **common))
            continue
        if isinstance(acc, BaseException):
            results.append(RunResult.for_spec(run.spec, status="failed", error=f"test data: {error_text(acc)}", **common))
            continue
        try:
            diagnostics = diagnostics_of(run.state, run, [])
        except BaseException as err:
            exits.reraise_users(err)
            results.append(failed_result(run.spec, err, **common))
            continue
        results.append(RunResult.for_spec(run.spec, target_acc=acc, target_train_acc=tacc, target_seconds=seconds, diagnostics=diagnostics, path="batched", **common))
    return results
