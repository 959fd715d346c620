"""The source-model cache: a later run that adds a strategy trains no source model, a cached
donor gives the same results as a freshly trained one, and a corrupt or foreign cache file
is retrained with a warning. The key follows the code that trains donors."""

from __future__ import annotations

import os
import time

import pytest
import torch

from ptbench.api import RunSpec
from ptbench.run.cache import CacheWarning, DonorCache, code_hash
from ptbench.registry import Registry
from ptbench.run.options import RunOptions
from ptbench.results.store import Store
from ptbench.strategies.full import Full
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.scratch import Scratch
from ptbench.strategies.selffer import Selffer
from ptbench.sweep.sweep import run_sweep
from ptbench.tasks.signal_noise import SignalNoise

from conftest import SMALL_TASK

TIMING = ("source_seconds", "target_seconds")


class CountingSignalNoise(SignalNoise):
    """Counts source-side data draws: a source model is trained exactly when they happen
    (a cached one needs neither its data nor its training)."""

    name = "counting-signal-noise"
    source_draws = 0

    def data(self, role, streams):
        if role == "source":
            type(self).source_draws += 1
        return super().data(role, streams)


def sweep(store_path, strategies, cache_dir, seeds=(0, 1), batched=True, task=None, force=False):
    task = task or CountingSignalNoise(**SMALL_TASK)
    specs = [RunSpec(task, s, seed) for seed in seeds for s in strategies]
    with Store(store_path) as store:
        report = run_sweep(specs, store, RunOptions(cache_dir=str(cache_dir), batched=batched), force=force, progress=False)
        frame = store.frame()
    return report, frame


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-run"])
def test_adding_a_strategy_trains_no_source_model(tmp_path, batched):
    CountingSignalNoise.source_draws = 0
    first, _ = sweep(tmp_path / "runs.db", [Scratch(), Full()], tmp_path / "cache", batched=batched)
    assert first.ran == 4 and CountingSignalNoise.source_draws == 2  # one source model per seed

    CountingSignalNoise.source_draws = 0
    second, frame = sweep(tmp_path / "runs.db", [Scratch(), Full(), PartialFilters(fraction=0.5, freeze=False)], tmp_path / "cache", batched=batched)
    assert second.ran == 2 and second.skipped == 4
    assert CountingSignalNoise.source_draws == 0
    assert (frame["status"] == "ok").all()
    # the new runs report the cached source model's accuracy and training time
    by_seed = frame.groupby("seed")
    assert all(group["source_acc"].nunique() == 1 and group["source_seconds"].nunique() == 1 for _, group in by_seed)


def test_a_cached_donor_gives_the_same_results_as_training_it(tmp_path):
    strategies = [Scratch(), Full(), Selffer(freeze=False)]
    _, trained = sweep(tmp_path / "a.db", strategies, tmp_path / "cache")
    CountingSignalNoise.source_draws = 0
    _, cached = sweep(tmp_path / "b.db", strategies, tmp_path / "cache")
    assert CountingSignalNoise.source_draws == 0
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4  # source + selffer donor, per seed
    # the load average is read at each write, like the time: it is not a result
    left = trained.drop(columns=[*TIMING, "created_at", "load_1min"]).sort_values("key").reset_index(drop=True)
    right = cached.drop(columns=[*TIMING, "created_at", "load_1min"]).sort_values("key").reset_index(drop=True)
    assert left.equals(right)


def test_a_corrupt_cache_file_is_retrained_with_a_warning(tmp_path):
    cache = tmp_path / "cache"
    _, before = sweep(tmp_path / "a.db", [Scratch(), Full()], cache, seeds=(0,))
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a torch file")
    CountingSignalNoise.source_draws = 0
    with pytest.warns(CacheWarning, match="unreadable"):
        _, after = sweep(tmp_path / "b.db", [Scratch(), Full()], cache, seeds=(0,))
    assert CountingSignalNoise.source_draws == 1
    assert list(after["target_acc"]) == list(before["target_acc"])
    torch.load(entry, weights_only=True)  # rewritten, readable again


class Payload:
    """An arbitrary object: unpickling it with weights_only=False would run this module's
    code; a cache must never do that."""

    unpickled = False

    def __init__(self):
        self.state = "anything"  # gives pickle a state to restore, so __setstate__ runs

    def __setstate__(self, state):
        type(self).unpickled = True


def test_a_cache_file_holding_an_arbitrary_pickled_object_is_refused_and_retrained(tmp_path):
    cache = tmp_path / "cache"
    _, before = sweep(tmp_path / "a.db", [Scratch(), Full()], cache, seeds=(0,))
    (entry,) = cache.glob("*.pt")
    torch.save({"model": Payload(), "note": "planted"}, entry)
    Payload.unpickled = False
    CountingSignalNoise.source_draws = 0
    with pytest.warns(CacheWarning):
        _, after = sweep(tmp_path / "b.db", [Scratch(), Full()], cache, seeds=(0,))
    assert not Payload.unpickled  # weights_only=True refused it without building the object
    assert CountingSignalNoise.source_draws == 1  # retrained
    assert list(after["target_acc"]) == list(before["target_acc"])
    torch.load(entry, weights_only=True)  # replaced by a proper entry


def test_a_cache_file_for_another_key_is_retrained_with_a_warning(tmp_path):
    cache = tmp_path / "cache"
    sweep(tmp_path / "a.db", [Full()], cache, seeds=(0, 1))
    first, second = sorted(cache.glob("*.pt"))
    first.write_bytes(second.read_bytes())  # seed 0's file now holds another entry
    CountingSignalNoise.source_draws = 0
    with pytest.warns(CacheWarning, match="holds"):
        _, frame = sweep(tmp_path / "b.db", [Full()], cache, seeds=(0, 1))
    assert CountingSignalNoise.source_draws == 1 and (frame["status"] == "ok").all()


def test_the_key_changes_with_the_task_the_seed_and_the_training_code(tmp_path):
    plugin = tmp_path / "mytask.py"
    plugin.write_text(
        "from ptbench.tasks.signal_noise import SignalNoise\n\n"
        "class MyTask(SignalNoise):\n    name = 'my-task'\n"
    )
    registry = Registry()
    registry.load_plugin(plugin)
    task = registry.task("my-task")(**SMALL_TASK)
    cache = DonorCache(tmp_path / "cache")
    key = cache.key(task, 0, "source-init")
    assert key != cache.key(task, 1, "source-init")
    assert key != cache.key(task, 0, "selffer-init")
    assert key != cache.key(type(task)(**{**SMALL_TASK, "d": 101}), 0, "source-init")

    before = code_hash(task)
    plugin.write_text(plugin.read_text() + "\n# a change to the task's code\n")
    later = time.time() + 5
    os.utime(plugin, (later, later))
    assert code_hash(task) != before
    assert DonorCache(tmp_path / "cache").key(task, 0, "source-init") != key


def test_no_cache_dir_means_no_cache(tmp_path):
    CountingSignalNoise.source_draws = 0
    task = CountingSignalNoise(**SMALL_TASK)
    specs = [RunSpec(task, Full(), 0)]
    with Store(tmp_path / "runs.db") as store:
        run_sweep(specs, store, RunOptions(cache_dir=None), progress=False)
        run_sweep(specs, store, RunOptions(cache_dir=None), force=True, progress=False)
    assert CountingSignalNoise.source_draws == 2


def test_a_scratch_only_group_trains_no_source_model_and_reads_its_accuracy_from_the_cache(tmp_path):
    # scratch inherits nothing (donor = None): without a cached source model none is trained
    # and the source column is empty; once the cache holds the model, the column is filled
    cache = tmp_path / "cache"
    CountingSignalNoise.source_draws = 0
    _, alone = sweep(tmp_path / "a.db", [Scratch()], cache, seeds=(0,))
    assert CountingSignalNoise.source_draws == 0 and not list(cache.glob("*.pt"))
    assert alone["source_acc"].isna().all() and (alone["status"] == "ok").all()
    _, both = sweep(tmp_path / "b.db", [Scratch(), Full()], cache, seeds=(0,))
    CountingSignalNoise.source_draws = 0
    _, again = sweep(tmp_path / "c.db", [Scratch()], cache, seeds=(0,))
    assert CountingSignalNoise.source_draws == 0
    assert list(again["source_acc"]) == [both["source_acc"].iloc[0]]
    assert list(again["target_acc"]) == list(alone["target_acc"])  # scratch itself is unchanged
