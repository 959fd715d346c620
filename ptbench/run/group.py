"""Group state: what every run of one (task variant, seed) shares, as one typed object.

Runs are grouped by (task variant, seed). A group draws its target data once and obtains
each donor (the source model; the selffer control's model trained on the target task)
once, then every strategy of the group plans and trains against them. Every strategy gets
the same target data and the same fresh target initialisation (the same (seed, role)
streams), so "strategy minus scratch" is a paired difference per seed. Both training paths
(per run, batched) and the contract checks receive this one object.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..api import RunResult, RunSpec, Strategy, Task, TaskData, TrainBudget
from ..rng import RandomStreams
from .cache import model_digest

#: The donors a group may need: name -> (the data role it trains on, its initialisation stream).
DONORS: dict[str, tuple[str, str]] = {"source": ("source", "source-init"), "target": ("target", "selffer-init")}


def batch_stream(donor: str) -> str:
    """The stream a donor's minibatch order is drawn from, on either path."""
    return f"{DONORS[donor][1]}-batches"


@dataclass
class Group:
    """The runs that share one source model: one task variant, one seed."""

    task: Task
    seed: int
    specs: list[RunSpec] = field(default_factory=list)

    @property
    def strategies(self) -> list[Strategy]:
        return [spec.strategy for spec in self.specs]

    def donors_needed(self) -> list[str]:
        """The donors some strategy of the group inherits from. A group of strategies that
        inherit nothing (`donor = None`: scratch) needs none, and trains no source model; its
        rows still show the source model's accuracy when the cache holds it."""
        return [d for d in DONORS if any(s.donor == d for s in self.strategies)]


def group_specs(specs: Iterable[RunSpec]) -> list[Group]:
    """Specs grouped by (task variant, seed), in first-seen order."""
    groups: "OrderedDict[tuple[str, int], Group]" = OrderedDict()
    for spec in specs:
        groups.setdefault((spec.task.key, spec.seed), Group(spec.task, spec.seed)).specs.append(spec)
    return list(groups.values())


@dataclass
class Trained:
    """A model trained on one side's data, with what the store keeps about it."""

    model: torch.nn.Module
    test_acc: float
    seconds: float
    diagnostics: dict
    trajectory: list
    #: `cache.state_digest` of the model's weights as the group received them (cached or
    #: trained here); None until computed (`GroupState.source_fields` fills it in).
    digest: str | None = None


@dataclass
class GroupState:
    """One group's shared state: its streams, target data, budget and donors. `failure`
    holds (status, error) once the group cannot go on (its data or a donor failed)."""

    group: Group
    streams: RandomStreams
    target_data: TaskData | None = None
    budget: TrainBudget | None = None
    donors: dict[str, Trained] = field(default_factory=dict)
    failure: tuple[str, str] | None = None
    #: The untrained stand-in that strategies with `donor = None` plan against (built by the
    #: runner when such a strategy plans; None until then).
    untrained: torch.nn.Module | None = None

    def donor_model(self, strategy: Strategy) -> torch.nn.Module | None:
        """The model `strategy` plans against: its trained donor, or for a strategy that
        inherits nothing, the untrained stand-in."""
        if strategy.donor is None:
            return self.untrained
        return self.donors[strategy.donor].model

    @property
    def task(self) -> Task:
        return self.group.task

    def source_fields(self, device: str) -> dict:
        """The fields every run of the group reports about its source model, its digest
        included (so two stores can be checked for having used the same source models)."""
        source = self.donors.get("source")
        if source is None:
            return dict(device=device)
        if source.digest is None:
            source.digest = model_digest(source.model)
        return dict(source_acc=source.test_acc, source_seconds=source.seconds, device=device, donor_digest=source.digest)

    def fail(self, status: str, error: str) -> None:
        """Mark the group failed; the first failure is the one reported."""
        if self.failure is None:
            self.failure = (status, error)

    def failed_results(self, device: str) -> list[RunResult]:
        """One row per run of a group that could not go on, each saying why."""
        status, error = self.failure or ("failed", "unknown group failure")
        return [RunResult.for_spec(spec, status=status, error=error, device=device) for spec in self.group.specs]
