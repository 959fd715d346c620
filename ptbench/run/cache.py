"""Trained donor models on disk, so that a later `run` reuses them instead of retraining.

A donor (the source model, or the selffer control's model trained on the target task)
depends on the task variant, the seed, its role, and the code that draws its data, builds
its model and trains it. The key is all four: `task.key`, the seed, the role, and a digest
(`ptbench.sources`) of

* the task's own modules: its class and base classes, and every helper module they use in
  the task's own folder (for signal-noise: task, data, model, engine, diagnostics; for a
  third-party task, its package's modules), plus its model's and its engine's modules;
* the harness modules that shape a donor (`DONOR_HARNESS`): the plugin contract, the
  random streams, the training loop, the donor roles and streams, per-run and batched
  donor training, and the engine protocol.

Edit any of them and the old entry is simply never looked up again (tests/ edit each one).
What the key does not cover: installed packages (torch, numpy), whose versions every run
records, and the data files of on-disk datasets, which are the user's.

An entry holds the weights (loaded with `torch.load(..., weights_only=True)`), the donor's
test accuracy, training seconds, diagnostics and trajectory: everything a RunResult reports
about its source model. A file that cannot be read, or whose stored key differs from the one
asked for, is reported with a warning and retrained (and overwritten). Writes go to a
temporary file renamed into place, so parallel workers never read half a file. A shared
cache folder trusts whoever can write to it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptbench.api import Task
from ptbench.sources import digest, plugin_modules

#: Bump when the layout of an entry changes.
FORMAT = 1
DEFAULT_DIR = ".ptbench-cache"


class CacheWarning(UserWarning):
    """A cache entry was unreadable or belonged to another key; the model is retrained."""


@dataclass
class CachedDonor:
    state: dict[str, torch.Tensor]
    test_acc: float
    seconds: float
    diagnostics: dict[str, Any]
    trajectory: list


#: Harness modules whose code decides what a donor becomes (see the module docstring).
DONOR_HARNESS = (
    "ptbench.api",
    "ptbench.rng",
    "ptbench.run.training",
    "ptbench.run.group",
    "ptbench.run.donors",
    "ptbench.run.batched",
    "ptbench.run.engines",
)


def training_modules(task: Task) -> set[str]:
    """Every module whose code shapes a donor of `task` (see the module docstring)."""
    extra = set()
    try:
        extra.add(type(task.model("source", torch.Generator())).__module__)
    except Exception:  # a task whose model cannot be built fails later, with its own message
        pass
    engine = task.batched_engine()
    if engine is not None:
        extra.add(type(engine).__module__)
    return plugin_modules(type(task), extra) | set(DONOR_HARNESS)


def code_hash(task: Task) -> str:
    """The digest of `training_modules(task)`."""
    return digest(training_modules(task))


class DonorCache:
    """Donor models keyed by (task variant, seed, role, training code). `folder=None` turns
    the cache off: every lookup misses and nothing is written."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        self._hashes: dict[str, str] = {}  # task.key -> code hash, computed once per task

    def key(self, task: Task, seed: int, role: str) -> str:
        if task.key not in self._hashes:
            self._hashes[task.key] = code_hash(task)
        return f"v{FORMAT}|{task.key}|seed={int(seed)}|role={role}|code={self._hashes[task.key]}"

    def path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"

    def load(self, task: Task, seed: int, role: str) -> CachedDonor | None:
        if self.folder is None:
            return None
        key = self.key(task, seed, role)
        path = self.path(key)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or entry.get("key") != key:
                found = entry.get("key") if isinstance(entry, dict) else type(entry).__name__
                warnings.warn(f"cache file {path} holds {found!r}, not {key!r}; retraining it", CacheWarning, stacklevel=2)
                return None
            return CachedDonor(
                state=dict(entry["state"]),
                test_acc=float(entry["test_acc"]),
                seconds=float(entry["seconds"]),
                diagnostics=dict(entry["diagnostics"]),
                trajectory=list(entry["trajectory"]),
            )
        except Exception as err:  # truncated, corrupt, or written by something else
            warnings.warn(f"cache file {path} is unreadable ({type(err).__name__}: {err}); retraining it", CacheWarning, stacklevel=2)
            return None

    def save(self, task: Task, seed: int, role: str, model: torch.nn.Module, test_acc: float, seconds: float, diagnostics: dict, trajectory: list) -> None:
        if self.folder is None:
            return
        key = self.key(task, seed, role)
        entry = {
            "key": key,
            "state": {n: t.detach().cpu().clone() for n, t in model.state_dict().items()},
            "test_acc": float(test_acc),
            "seconds": float(seconds),
            "diagnostics": diagnostics,
            "trajectory": trajectory,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(entry, tmp)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
