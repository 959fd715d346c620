"""Donors: the trained models strategies inherit from, from the cache or trained here.

Which donor trains on which data from which initialisation stream is `group.DONORS`; this
module trains one donor on the per-run training loop (the batched path trains many at once
in `batched.py`, with the same streams) and moves donors in and out of the cache.
"""

from __future__ import annotations

import time
import warnings

import torch

from ..api import Task, TaskData
from ..rng import RandomStreams
from .cache import CacheWarning, DonorCache, model_digest
from .group import DONORS, Trained, batch_stream
from .training import accuracy, train


def tracer(task: Task, data: TaskData, plan) -> tuple[list, object]:
    """(trajectory list, observer) recording task diagnostics during training, or ([], None)."""
    trajectory: list = []
    if task.trace_every() <= 0:
        return trajectory, None

    def observe(step: int, model: torch.nn.Module) -> None:
        trajectory.append({"step": step, **task.diagnostics(model, data, plan)})

    return trajectory, observe


def fresh_donor(task: Task, donor: str, streams: RandomStreams, device: str) -> torch.nn.Module:
    role, init_role = DONORS[donor]
    return task.model(role, streams.torch(init_role)).to(device)


def train_donor(task: Task, donor: str, data: TaskData, streams: RandomStreams, device: str, model: torch.nn.Module | None = None) -> Trained:
    """Train a donor model (fresh from its stream unless given) on its side's data, on the
    per-run training loop."""
    role = DONORS[donor][0]
    start = time.perf_counter()
    model = model if model is not None else fresh_donor(task, donor, streams, device)
    budget = task.budget(role)
    trajectory, observer = tracer(task, data, None)
    train(model, data.train, budget, streams.torch(batch_stream(donor)), observer=observer, observe_every=max(task.trace_every(), 1))
    seconds = time.perf_counter() - start
    acc = accuracy(model, data.test, budget.loss)
    return Trained(model, acc, seconds, task.diagnostics(model, data, None), trajectory, model_digest(model))


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
    # the digest of the weights the model now holds (load_state_dict may cast), which is the
    # entry's verified digest whenever the model's dtypes are those it was saved with
    return Trained(model.to(device), entry.test_acc, entry.seconds, entry.diagnostics, entry.trajectory, model_digest(model))


def save_donor(task: Task, donor: str, seed: int, trained: Trained, cache: DonorCache) -> None:
    cache.save(task, seed, DONORS[donor][1], trained.model, trained.test_acc, trained.seconds, trained.diagnostics, trained.trajectory)


def donor_data(task: Task, donor: str, streams: RandomStreams, device: str, target_data: TaskData) -> TaskData:
    """The data a donor trains on: the group's target data, or the source side drawn now
    (only when the source model must be trained)."""
    role = DONORS[donor][0]
    return target_data if role == "target" else task.data(role, streams).to(device)
