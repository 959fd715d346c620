"""The batched path: every group of one task variant (its seeds) run through the task's engine.

Same data, same initialisations, same plans and the same stored fields as the per-run path
(`ptbench.run.per_run.run_group`); only the training and evaluation are one tensor program for
all runs instead of a loop. In order:

1. Each seed's target data, drawn once and shared by its strategies (pairing).
2. Donors (source models, and selffer donors where a strategy asks for one): from the
   cache, else trained together, one program per role, and cached.
3. Every run's plan, made as on the per-run path (the fresh target model of its seed, the
   `plan` stream), then all runs the engine supports trained as one program.
4. Runs the engine cannot take (a strategy with a training hook, a plan it cannot express)
   go through `run_one`, the per-run path, against the same donors and data.

Timing fields mean what they mean per run, averaged: `target_seconds` of a batched run is
(planning + the training program) / the number of runs in the program, and `source_seconds`
the donor program's time / the donors in it (or, from the cache, what training took then).
`--timeout` applies to the program as a whole, scaled by its number of runs; past it, every
run of the program is stored as `timeout`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ptbench.api import PlanContext, RunResult, RunSpec, TaskData, TransferModel
from ptbench.run.cache import DonorCache
from ptbench.run.engines import BatchedEngine, BatchJob
from ptbench.errors import PtbenchError
from ptbench.rng import RandomStreams
from ptbench.run.per_run import (
    DONORS,
    Group,
    RunOptions,
    Trained,
    _diagnostics,
    _error_text,
    _snapshot,
    _unchanged,
    cached_donor,
    run_one,
    save_donor,
    train_donor,
)
from ptbench.run.training import Diverged, RunTimeout, accuracy, train


@dataclass
class _Seed:
    """One group's shared state: its streams, target data and donors."""

    group: Group
    streams: RandomStreams
    target_data: TaskData
    donors: dict[str, Trained] = field(default_factory=dict)
    failure: tuple[str, str] | None = None  # (status, error) once the group cannot go on


def run_batched(groups: list[Group], engine: BatchedEngine, options: RunOptions) -> Iterator[RunResult]:
    """Run groups of one task variant; results come out per program, then per-run ones."""
    task = groups[0].task
    device = options.device
    cache = DonorCache(options.cache_dir)
    seeds: list[_Seed] = []
    for group in groups:
        streams = RandomStreams(group.seed)
        try:
            seeds.append(_Seed(group, streams, task.data("target", streams).to(device)))
        except PtbenchError:
            raise
        except Exception as err:
            yield from _fail(group, "failed", f"source model: {_error_text(err)}", device)
    try:
        budget = task.budget("target")
    except PtbenchError:
        raise
    except Exception as err:
        for seed in seeds:
            yield from _fail(seed.group, "failed", f"source model: {_error_text(err)}", device)
        return

    for donor in DONORS:
        _donors(task, donor, [s for s in seeds if _needs(s, donor)], engine, device, cache)
    ready = []
    for seed in seeds:
        if seed.failure:
            yield from _fail(seed.group, *seed.failure, device)
        else:
            ready.append(seed)

    jobs: list[tuple[_Seed, RunSpec, BatchJob]] = []
    per_run: list[tuple[_Seed, RunSpec]] = []
    results: list[RunResult] = []
    start = time.perf_counter()
    for seed in ready:
        try:
            fresh = task.model("target", seed.streams.torch("target-init")).to(device)
        except PtbenchError:
            raise
        except Exception as err:
            results.extend(_fail(seed.group, "failed", _error_text(err), device))
            continue
        for spec in seed.group.specs:
            planned = _plan(spec, seed, fresh, budget, engine, options)
            if isinstance(planned, RunResult):
                results.append(planned)
            elif planned is None:
                per_run.append((seed, spec))
            else:
                jobs.append((seed, spec, planned))
    yield from results
    if jobs:
        yield from _train_targets(task, jobs, budget, engine, options, start)
    for seed, spec in per_run:
        donors = {name: trained.model for name, trained in seed.donors.items()}
        yield run_one(spec, task, seed.streams, donors, seed.target_data, budget, seed.donors["source"], options)


def _needs(seed: _Seed, donor: str) -> bool:
    return donor == "source" or any(s.donor == donor for s in seed.group.strategies)


def _fail(group: Group, status: str, error: str, device: str) -> Iterator[RunResult]:
    for spec in group.specs:
        yield RunResult.for_spec(spec, status=status, error=error, device=device)


def _donors(task, donor: str, seeds: list[_Seed], engine: BatchedEngine, device: str, cache: DonorCache) -> None:
    """Give every seed its donor: cached, trained in one engine program, or per-run."""
    role, init_role = DONORS[donor]
    missing: list[tuple[_Seed, TransferModel, TaskData]] = []
    for seed in seeds:
        if seed.failure:
            continue
        try:
            trained = cached_donor(task, donor, seed.streams, device, cache)
            if trained is not None:
                seed.donors[donor] = trained
                continue
            data = seed.target_data if role == "target" else task.data(role, seed.streams).to(device)
            model = task.model(role, seed.streams.torch(init_role)).to(device)
            if engine.supports(model, task.budget(role), None) is None and task.trace_every() <= 0:
                missing.append((seed, model, data))
            else:
                seed.donors[donor] = train_donor(task, role, data, seed.streams, device, init_role)
                save_donor(task, donor, seed.group.seed, seed.donors[donor], cache)
        except PtbenchError:
            raise
        except Exception as err:
            seed.failure = ("diverged" if isinstance(err, Diverged) else "failed", f"source model: {_error_text(err)}")
    if not missing:
        return
    budget = task.budget(role)
    start = time.perf_counter()
    try:
        outcomes = engine.train([BatchJob(model, data.train) for _, model, data in missing], budget)
    except Exception as err:
        for seed, _, _ in missing:
            seed.failure = ("failed", f"source model: {_error_text(err)}")
        return
    seconds = (time.perf_counter() - start) / len(missing)
    models = [model for _, model, _ in missing]
    accs = engine.accuracy(models, [data.test for _, _, data in missing], budget.loss)
    for (seed, model, data), outcome, acc in zip(missing, outcomes, accs):
        if outcome.status != "ok":
            seed.failure = (outcome.status, f"source model: Diverged: {outcome.error}")
            continue
        try:
            trained = Trained(model, acc, seconds, task.diagnostics(model, data, None), [])
        except Exception as err:
            seed.failure = ("failed", f"source model: {_error_text(err)}")
            continue
        seed.donors[donor] = trained
        save_donor(task, donor, seed.group.seed, trained, cache)


def _plan(spec: RunSpec, seed: _Seed, fresh: TransferModel, budget, engine: BatchedEngine, options: RunOptions):
    """The run's job for the engine; None to send it per-run; a RunResult if planning failed."""
    strategy = spec.strategy
    if strategy.customises_training() or strategy.donor not in seed.donors:
        return None  # training hooks, or an unknown donor run_one reports
    task, streams, device = seed.group.task, seed.streams, options.device
    donor = seed.donors[strategy.donor]
    common = dict(source_acc=seed.donors["source"].test_acc, source_seconds=seed.donors["source"].seconds, device=device)
    before = _snapshot(donor.model)
    try:
        target = copy.deepcopy(fresh)  # the seed's fresh initialisation, as task.model draws it
        context = PlanContext(
            train_data=seed.target_data.train,
            budget=budget,
            task=task,
            streams=streams,
            device=device,
            train=lambda model, split, plan: train(model, split, budget, streams.torch("plan-batches"), plan),
            evaluate=lambda model, split: accuracy(model, split, budget.loss),
        )
        plan = strategy.plan_with_data(donor.model, target, streams.torch("plan"), context)
        plan.check_against(target)
        if not _unchanged(donor.model, before):
            raise RuntimeError(f"strategy {strategy.instance_name} modified the {strategy.donor} model it inherits from")
        if engine.supports(target, budget, plan) is not None:
            return None
        plan.apply(donor.model, target)
        return BatchJob(target, seed.target_data.train, plan)
    except Exception as err:
        if not _unchanged(donor.model, before):  # never let one strategy's damage reach the next
            with torch.no_grad():
                for n, p in donor.model.named_parameters():
                    p.copy_(before[n])
        return RunResult.for_spec(spec, status="failed", error=_error_text(err), **common)


def _train_targets(task, jobs: list, budget, engine: BatchedEngine, options: RunOptions, start: float) -> Iterator[RunResult]:
    device = options.device
    deadline = time.monotonic() + options.timeout * len(jobs) if options.timeout else None
    common = [
        dict(source_acc=seed.donors["source"].test_acc, source_seconds=seed.donors["source"].seconds, device=device)
        for seed, _, _ in jobs
    ]
    try:
        outcomes = engine.train([job for _, _, job in jobs], budget, deadline)
    except RunTimeout as err:
        for (_, spec, _), extra in zip(jobs, common):
            yield RunResult.for_spec(spec, status="timeout", error=f"{err} ({len(jobs)} runs, {options.timeout:g} s each)", **extra)
        return
    except Exception as err:
        for (_, spec, _), extra in zip(jobs, common):
            yield RunResult.for_spec(spec, status="failed", error=f"batched program: {_error_text(err)}", **extra)
        return
    seconds = (time.perf_counter() - start) / len(jobs)
    models = [job.model for _, _, job in jobs]
    test = engine.accuracy(models, [seed.target_data.test for seed, _, _ in jobs], budget.loss)
    train_acc = engine.accuracy(models, [seed.target_data.train for seed, _, _ in jobs], budget.loss)
    for (seed, spec, job), outcome, extra, acc, tacc in zip(jobs, outcomes, common, test, train_acc):
        if outcome.status != "ok":
            yield RunResult.for_spec(spec, status=outcome.status, error=outcome.error, **extra)
            continue
        try:
            diagnostics = _diagnostics(seed.donors["source"], task.diagnostics(job.model, seed.target_data, job.plan), [])
            if job.plan.notes:
                diagnostics["strategy"] = dict(job.plan.notes)
        except Exception as err:
            yield RunResult.for_spec(spec, status="failed", error=_error_text(err), **extra)
            continue
        yield RunResult.for_spec(
            spec, target_acc=acc, target_train_acc=tacc, target_seconds=seconds, diagnostics=diagnostics, **extra
        )
