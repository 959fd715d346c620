"""From RunSpecs to stored results: grouping, source models, pairing, failures.

Runs are grouped by (task variant, seed). A group draws its data and trains its source model
once, then runs every strategy of the group against that one source model. Inside a group
every strategy gets the same target data and the same fresh target initialisation (the same
(seed, role) streams), so "strategy minus scratch" is a paired difference per seed.

This module is the per-run path (any model, any strategy hook) and what both paths share:
donors from the cache (`ptbench.run.cache`) or trained and cached, diagnostics, run records.
Where a task offers a batched engine, `ptbench.run.batched` trains the groups of one task
variant together instead, with the same data, initialisations, plans and records;
`ptbench.sweep.units` decides which groups go which way, `ptbench.sweep.execute` where they run.
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from ptbench.api import PlanContext, RunResult, RunSpec, Strategy, Task, TaskData
from ptbench.run.cache import CacheWarning, DonorCache
from ptbench.errors import PtbenchError
from ptbench.rng import RandomStreams
from ptbench.run.training import Diverged, RunTimeout, accuracy, train


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtbenchError("--device cuda was asked for but this torch sees no CUDA device; use --device cpu or auto")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise PtbenchError(f"no CUDA device {name!r}: this machine has {torch.cuda.device_count()} (cuda:0..); use --device cuda")
        return name
    raise PtbenchError(f"unknown device {name!r}; valid: auto, cpu, cuda")


@dataclass
class Group:
    """The runs that share one source model: one task variant, one seed."""

    task: Task
    seed: int
    strategies: list[Strategy] = field(default_factory=list)
    specs: list[RunSpec] = field(default_factory=list)


def group_specs(specs: Iterable[RunSpec]) -> list[Group]:
    groups: "OrderedDict[tuple[str, int], Group]" = OrderedDict()
    for spec in specs:
        group = groups.setdefault((spec.task.key, spec.seed), Group(spec.task, spec.seed))
        group.strategies.append(spec.strategy)
        group.specs.append(spec)
    return list(groups.values())


def _error_text(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"


@dataclass
class Trained:
    """A model trained on one side's data, with what the store keeps about it."""

    model: torch.nn.Module
    test_acc: float
    seconds: float
    diagnostics: dict
    trajectory: list


def tracer(task: Task, data: TaskData, plan) -> tuple[list, object]:
    """(trajectory list, observer) recording task diagnostics during training, or ([], None)."""
    trajectory: list = []
    if task.trace_every() <= 0:
        return trajectory, None

    def observe(step: int, model: torch.nn.Module) -> None:
        trajectory.append({"step": step, **task.diagnostics(model, data, plan)})

    return trajectory, observe


def train_donor(task: Task, role: str, data: TaskData, streams: RandomStreams, device: str, init_role: str) -> Trained:
    """Train a fresh model on one side's data (the source model, or the selffer donor)."""
    start = time.perf_counter()
    model = task.model(role, streams.torch(init_role)).to(device)
    budget = task.budget(role)
    trajectory, observer = tracer(task, data, None)
    train(model, data.train, budget, streams.torch(f"{init_role}-batches"), observer=observer, observe_every=max(task.trace_every(), 1))
    seconds = time.perf_counter() - start
    return Trained(model, accuracy(model, data.test, budget.loss), seconds, task.diagnostics(model, data, None), trajectory)


#: The donors a group may need: (the data role it trains on, the stream of its initialisation).
DONORS = {"source": ("source", "source-init"), "target": ("target", "selffer-init")}


def cached_donor(task: Task, donor: str, streams: RandomStreams, device: str, cache: DonorCache) -> Trained | None:
    """The donor from the cache (its training time is the one recorded when it was trained)."""
    role, init_role = DONORS[donor]
    entry = cache.load(task, streams.seed, init_role)
    if entry is None:
        return None
    model = task.model(role, streams.torch(init_role))
    try:
        model.load_state_dict(entry.state)
    except (RuntimeError, KeyError) as err:  # the model's shape changed without a code change we hash
        warnings.warn(f"cached {init_role} model of {task.instance_name} seed {streams.seed} does not fit the model ({err}); retraining it", CacheWarning)
        return None
    return Trained(model.to(device), entry.test_acc, entry.seconds, entry.diagnostics, entry.trajectory)


def save_donor(task: Task, donor: str, seed: int, trained: Trained, cache: DonorCache) -> None:
    cache.save(task, seed, DONORS[donor][1], trained.model, trained.test_acc, trained.seconds, trained.diagnostics, trained.trajectory)


def obtain_donor(task: Task, donor: str, streams: RandomStreams, device: str, cache: DonorCache, target_data: TaskData) -> Trained:
    """The donor from the cache, or trained on the per-run path (and cached). The source
    side's data is drawn only when the source model must be trained."""
    trained = cached_donor(task, donor, streams, device, cache)
    if trained is None:
        role, init_role = DONORS[donor]
        data = target_data if role == "target" else task.data(role, streams).to(device)
        trained = train_donor(task, role, data, streams, device, init_role)
        save_donor(task, donor, streams.seed, trained, cache)
    return trained


def _diagnostics(source: Trained, target: dict, target_trajectory: list) -> dict:
    """The stored diagnostics: {"source": ..., "target": ...} and trajectories when traced."""
    out: dict = {}
    if source.diagnostics:
        out["source"] = source.diagnostics
    if target:
        out["target"] = target
    if source.trajectory or target_trajectory:
        out["trajectory"] = {"source": source.trajectory, "target": target_trajectory}
    return out


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _unchanged(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p.detach(), snapshot[n]) for n, p in model.named_parameters())


@dataclass(frozen=True)
class RunOptions:
    """Harness settings that are not part of a run's identity."""

    device: str = "cpu"
    timeout: float | None = None  # seconds per target run (the source model has its own)
    #: Where trained donors are cached (None: no cache). The CLI's default is .ptbench-cache.
    cache_dir: str | None = None
    #: Train the runs a task's batched engine supports as one program (False: all per-run).
    batched: bool = True
    #: The most runs one batched program holds (bounds memory: each seed's data stays in it).
    max_batch_runs: int = 256


def run_group(group: Group, options: RunOptions) -> Iterator[RunResult]:
    """Train the group's source model, then every strategy's target model; yield each result
    as soon as it exists, so that a crash loses at most the run in progress."""
    device = options.device
    task, streams = group.task, RandomStreams(group.seed)
    cache = DonorCache(options.cache_dir)
    try:
        target_data = task.data("target", streams).to(device)
        budget = task.budget("target")  # a plugin's bug here fails the group, not the sweep
        source = obtain_donor(task, "source", streams, device, cache, target_data)
        donors = {"source": source.model}
        if any(s.donor == "target" for s in group.strategies):
            donors["target"] = obtain_donor(task, "target", streams, device, cache, target_data).model
    except PtbenchError:
        raise  # a user's mistake (missing data files, say) stops the sweep with its message
    except Exception as err:  # the whole group fails, visibly, and the sweep goes on
        status = "diverged" if isinstance(err, Diverged) else "failed"
        for spec in group.specs:
            yield RunResult.for_spec(spec, status=status, error=f"source model: {_error_text(err)}", device=device)
        return
    for spec in group.specs:
        yield run_one(spec, task, streams, donors, target_data, budget, source, options)


def run_one(spec, task, streams, donors, target_data, budget, source: Trained, options: RunOptions) -> RunResult:
    device = options.device
    strategy = spec.strategy
    common = dict(source_acc=source.test_acc, source_seconds=source.seconds, device=device)
    if strategy.donor not in donors:
        return RunResult.for_spec(spec, status="failed", error=f"unknown donor {strategy.donor!r}; use 'source' or 'target'", **common)
    donor = donors[strategy.donor]
    before = _snapshot(donor)
    try:
        start = time.perf_counter()
        deadline = time.monotonic() + options.timeout if options.timeout else None
        target = task.model("target", streams.torch("target-init")).to(device)
        context = PlanContext(
            train_data=target_data.train,
            budget=budget,
            task=task,
            streams=streams,
            device=device,
            train=lambda model, split, plan: train(model, split, budget, streams.torch("plan-batches"), plan, deadline=deadline),
            evaluate=lambda model, split: accuracy(model, split, budget.loss),
        )
        plan = strategy.plan_with_data(donor, target, streams.torch("plan"), context)
        plan.check_against(target)
        plan.apply(donor, target)
        reference = _snapshot(donor) if strategy.customises_training() else None
        trajectory, observer = tracer(task, target_data, plan)
        train(
            target, target_data.train, budget, streams.torch("target-batches"), plan, strategy, reference,
            deadline=deadline, observer=observer, observe_every=max(task.trace_every(), 1),
        )
        seconds = time.perf_counter() - start
        if not _unchanged(donor, before):
            raise RuntimeError(f"strategy {strategy.instance_name} modified the {strategy.donor} model it inherits from")
        diagnostics = _diagnostics(source, task.diagnostics(target, target_data, plan), trajectory)
        if plan.notes:  # what the strategy chose while planning (auto-fraction's fraction)
            diagnostics["strategy"] = dict(plan.notes)
        return RunResult.for_spec(
            spec,
            target_acc=accuracy(target, target_data.test, budget.loss),
            target_train_acc=accuracy(target, target_data.train, budget.loss),
            target_seconds=seconds,
            diagnostics=diagnostics,
            **common,
        )
    except Diverged as err:
        return RunResult.for_spec(spec, status="diverged", error=str(err), **common)
    except RunTimeout as err:
        return RunResult.for_spec(spec, status="timeout", error=str(err), **common)
    except Exception as err:
        return RunResult.for_spec(spec, status="failed", error=_error_text(err), **common)
    finally:
        if not _unchanged(donor, before):  # never let one strategy's damage reach the next
            with torch.no_grad():
                for n, p in donor.named_parameters():
                    p.copy_(before[n])
