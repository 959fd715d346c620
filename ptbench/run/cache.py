"""Trained donor models on disk, so that a later `run` reuses them instead of retraining.

A source model (or the selffer control's donor, trained on the target task) depends on the
task variant, the seed, its role, and the code that draws its data and trains it. The key
is all four: `task.key`, the seed, the role, and a hash of the source of every module that
defines training (ptbench.run.training, ptbench.rng, the task's module, the model's module, the
task's batched engine). Change any of them and the old entry is simply never looked up
again; benchopt's users complain of caches that miss code changes, and this one cannot.

An entry holds the weights (loaded with `torch.load(..., weights_only=True)`), the donor's
test accuracy, training seconds, diagnostics and trajectory: everything a RunResult reports
about its source model. A file that cannot be read, or whose stored key differs from the one
asked for, is reported with a warning and retrained (and overwritten). Writes go to a
temporary file renamed into place, so parallel workers never read half a file.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ptbench.api import Task

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


def _module_file(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    try:
        return inspect.getsourcefile(module) if module is not None else None
    except TypeError:  # built-in or compiled module: no source to hash
        return None


@lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def training_modules(task: Task) -> set[str]:
    """The modules whose code decides what a donor of `task` becomes: ptbench.run.training and
    ptbench.rng, the modules of the task's classes (its base classes too: a class-split
    image task draws its data in ptbench.tasks.images.base), the ptbench modules those reference
    (datasets, models), the model's module and the task's batched engine."""
    modules = {"ptbench.run.training", "ptbench.rng"}
    for cls in type(task).__mro__:
        if issubclass(cls, Task) and cls is not Task:
            modules.add(cls.__module__)
    for name in list(modules):
        module = sys.modules.get(name)
        for value in vars(module).values() if module is not None else ():
            origin = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(origin, str) and origin.startswith("ptbench."):
                modules.add(origin)
    try:
        modules.add(type(task.model("source", torch.Generator())).__module__)
    except Exception:  # a task whose model cannot be built fails later, with its own message
        pass
    engine = task.batched_engine()
    if engine is not None:
        modules |= {type(engine).__module__, "ptbench.run.engines"}
    return modules


def code_hash(task: Task) -> str:
    """A digest of the source files of `training_modules(task)`."""
    digest = hashlib.sha256()
    for name in sorted(training_modules(task)):
        path = _module_file(name)
        if path is None:
            digest.update(f"{name}:no-source".encode())
            continue
        digest.update(f"{name}:{_file_digest(path, os.stat(path).st_mtime_ns)}".encode())
    return digest.hexdigest()


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
