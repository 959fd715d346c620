"""One run, one path: every run of some groups, from data to RunResults.

For each group: draw its target data and budget, obtain its donors (cache, else one engine
program per donor role, else the per-run loop), then plan every run with the one planning
protocol (`protocol.plan_target`). `protocol.batched_refusal` then decides, once per run,
where it trains: runs the task's engine supports are trained together as one program
(`batched.train_runs`), the rest at once on the per-run loop (`per_run.train_planned`).

A plugin's failure fails the runs it touches (a group whose data or donor fails: all its
runs; a strategy that fails: its own run) and never the sweep; a PtbenchError (a user's
mistake, such as data files that are not on disk) stops the sweep with its message.
"""

from __future__ import annotations

import time
from typing import Sequence

from ..api import RunResult, RunSpec, Task
from ..errors import PtbenchError
from ..rng import RandomStreams
from . import exits
from .batched import train_donors, train_runs
from .cache import DonorCache, model_digest
from .donors import cached_donor, donor_data, fresh_donor, save_donor, train_donor
from .engines import torch_threads
from .group import DONORS, Group, GroupState
from .options import RunOptions
from .per_run import PlannedRun, error_text, failed_result, status_of, train_planned
from .protocol import batched_refusal, deadline_after, plan_context, plan_target


def run_groups(groups: Sequence[Group], options: RunOptions) -> list[RunResult]:
    """Every run of `groups`, which share one task variant; results in no promised order."""
    if not groups:
        return []
    task = groups[0].task
    engine = task.batched_engine() if options.batched else None
    # Batched units run under the engine's thread count (as they always have: the same
    # thread count keeps float reductions, and so the stored numbers, the same).
    threads = engine.threads if engine is not None and task.trace_every() <= 0 and options.device == "cpu" else None
    with torch_threads(threads):
        return _run(task, list(groups), engine, options)


def _run(task: Task, groups: list[Group], engine, options: RunOptions) -> list[RunResult]:
    device = options.device
    cache = DonorCache(options.cache_dir)
    states = [_prepare(task, group, device) for group in groups]
    for donor in DONORS:
        _obtain_donors(task, donor, [s for s in states if s.failure is None and donor in s.group.donors_needed()], engine, options, cache)
    for state in states:  # the source column of donor-free groups: from the cache, never trained
        if state.failure is None and "source" not in state.donors:
            _cached_source(task, state, device, cache)
    results: list[RunResult] = []
    queued: list[PlannedRun] = []
    for state in states:
        if state.failure is not None:
            results += state.failed_results(device)
            continue
        for spec in state.group.specs:
            planned = plan_run(spec, state, options, engine)
            if isinstance(planned, RunResult):
                results.append(planned)
            elif batched_refusal(engine, task, spec.strategy, planned.target, state.budget, planned.plan) is None:
                queued.append(planned)
            else:
                results.append(train_planned(planned, device))
    results += train_runs(engine, queued, options)
    return results


def _prepare(task: Task, group: Group, device: str) -> GroupState:
    state = GroupState(group, RandomStreams(group.seed))
    exits.now("data", [spec.key for spec in group.specs])
    try:
        state.target_data = task.data("target", state.streams).to(device)
        state.budget = task.budget("target")
    except PtbenchError:
        raise
    except BaseException as err:  # a plugin's bug (or sys.exit) fails the group, not the sweep
        exits.reraise_users(err)
        state.fail("failed", f"source model: {error_text(err)}")
    return state


def _obtain_donors(task: Task, donor: str, states: list[GroupState], engine, options: RunOptions, cache: DonorCache) -> None:
    """Give every state its donor: from the cache, else trained (as one engine program
    where the engine supports the donor's model and budget, else per run) and cached."""
    device = options.device
    role = DONORS[donor][0]
    missing = []
    for state in states:
        exits.now("source model", [spec.key for spec in state.group.specs])
        try:
            trained = cached_donor(task, donor, state.streams, device, cache)
            if trained is None:
                data = donor_data(task, donor, state.streams, device, state.target_data)
                model = fresh_donor(task, donor, state.streams, device)
                if batched_refusal(engine, task, None, model, task.budget(role), None) is None:
                    missing.append((state, model, data))
                    continue
                trained = train_donor(task, donor, data, state.streams, device, model)
                save_donor(task, donor, state.group.seed, trained, cache)
            state.donors[donor] = trained
        except PtbenchError:
            raise
        except BaseException as err:
            exits.reraise_users(err)
            state.fail(status_of(err) if status_of(err) == "diverged" else "failed", f"source model: {error_text(err)}")
    for (state, _, _), trained in zip(missing, train_donors(engine, donor, missing)):
        if trained is not None:
            if trained.digest is None:  # trained by the engine: the same digest as any other donor
                trained.digest = model_digest(trained.model)
            state.donors[donor] = trained
            save_donor(task, donor, state.group.seed, trained, cache)


def _cached_source(task: Task, state: GroupState, device: str, cache: DonorCache) -> None:
    try:
        trained = cached_donor(task, "source", state.streams, device, cache)
    except PtbenchError:
        raise
    except BaseException as err:  # a plugin's model that fails to build: the runs will say so
        exits.reraise_users(err)
        return
    if trained is not None:
        state.donors["source"] = trained


def _ensure_untrained(state: GroupState, device: str) -> None:
    """What a strategy that inherits nothing (`donor = None`) plans against: the source
    model's fresh, untrained initialisation, built once per group. Planning must then copy
    nothing (`protocol.make_plan` checks), so no number can depend on it."""
    if state.untrained is None:
        state.untrained = fresh_donor(state.task, "source", state.streams, device)


def plan_run(spec: RunSpec, state: GroupState, options: RunOptions, engine=None) -> PlannedRun | RunResult:
    """The run's fresh target with its plan applied, or the RunResult of a failed plan."""
    strategy, device = spec.strategy, options.device
    common = state.source_fields(device)
    if strategy.donor is not None and strategy.donor not in state.donors:
        return RunResult.for_spec(spec, status="failed", error=f"unknown donor {strategy.donor!r}; use one of: {', '.join(DONORS)} (or None: inherit nothing)", **common)
    start = time.perf_counter()
    deadline = deadline_after(options.timeout)
    exits.now("planning", [spec.key])
    try:
        target = state.task.model("target", state.streams.torch("target-init")).to(device)
        if strategy.donor is None:
            _ensure_untrained(state, device)
        donor = state.donor_model(strategy)
        context = plan_context(state.task, state.target_data.train, state.budget, state.streams, device, deadline, state.target_data.extras, engine, donor)
        plan = plan_target(strategy, donor, target, state.streams, context)
    except BaseException as err:  # SystemExit, KeyboardInterrupt from plugin code fail the run too
        exits.reraise_users(err)
        return failed_result(spec, err, **common)
    return PlannedRun(spec, state, target, plan, time.perf_counter() - start, deadline)
