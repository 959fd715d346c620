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
about its source model; and the key it was made for and the digest of its weights
(`state_digest`: SHA-256 over every tensor's name, dtype, shape and bytes, in name order).
A file that cannot be read, whose stored key differs from the one asked for, or whose
weights no longer match their digest (bit rot, a copy cut short, weights edited after the
fact) is reported with a CacheWarning and retrained (and overwritten). Every run records the
digest of its group's source model (`RunResult.donor_digest`, computed the same way for a
donor trained there and then), so two stores can be checked for having used the same donors.

Writes go to a temporary file renamed into place, so parallel workers never read half a
file. A cache folder that cannot be written (a file, read-only, a full disk) is reported once
and the sweep goes on without writing to it, still reading the entries it holds.

Trust: the digest catches damage, not malice. Whoever can write to a cache folder can write
an entry with a matching key and digest (zeroed weights, a recorded accuracy of 1.0) and
every run that reads it reports that donor. A shared cache folder therefore trusts everyone
who can write to it: share one only among people whose results you would accept, keep it
read-only for the rest, or compare the `donor_digest` of two stores' runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ptbench.api import Task
from ptbench.sources import digest, plugin_modules

#: Bump when the layout of an entry changes (2: entries carry the digest of their weights).
FORMAT = 2
DEFAULT_DIR = ".ptbench-cache"


class CacheWarning(UserWarning):
    """A cache entry was unreadable, belonged to another key or did not match its digest (the
    model is retrained), or the cache folder cannot be written (the sweep runs without it)."""


@dataclass
class CachedDonor:
    state: dict[str, torch.Tensor]
    test_acc: float
    seconds: float
    diagnostics: dict[str, Any]
    trajectory: list
    digest: str | None = None


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state dict, in name order: each name, dtype and shape,
    then its bytes. The same weights give the same digest on any device and in any process."""
    sha = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):  # a plugin's extra state: hash what it says
            sha.update(f"{name}|{type(tensor).__name__}|{tensor!r}\n".encode())
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        sha.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        if flat.numel():
            sha.update(flat.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """`state_digest` of a model's state dict (parameters and buffers)."""
    return state_digest(model.state_dict())


#: (folder, trouble) already reported in this process: one warning each.
_REPORTED: set[tuple[str, str]] = set()


#: Harness modules whose code decides what a donor becomes (see the module docstring).
DONOR_HARNESS = (
    "ptbench.api",
    "ptbench.rng",
    "ptbench.run.training",
    "ptbench.run.group",
    "ptbench.run.donors",
    "ptbench.run.batched",
    "ptbench.run.engines",
    "ptbench.run.vmapped",
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
        self.writable = True  # False once a write failed: the rest of the sweep only reads

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
        try:
            if not path.exists():
                return None
        except OSError as err:  # a folder this user may not look into: a miss, reported once
            self._report_once(f"cannot read the donor cache {str(self.folder)!r} ({err.strerror or err}); training donors "
                              "instead of reading them: pass a readable --cache-dir, or --no-cache")
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or entry.get("key") != key:
                found = entry.get("key") if isinstance(entry, dict) else type(entry).__name__
                warnings.warn(f"cache file {path} holds {found!r}, not {key!r}; retraining it", CacheWarning, stacklevel=2)
                return None
            state = dict(entry["state"])
            recorded, actual = entry.get("digest"), state_digest(state)
            if recorded != actual:
                warnings.warn(
                    f"cache file {path} does not match its digest (recorded {str(recorded)[:16]}, weights {actual[:16]}): "
                    "its weights were changed after it was written; retraining it",
                    CacheWarning, stacklevel=2,
                )
                return None
            return CachedDonor(
                state=state,
                test_acc=float(entry["test_acc"]),
                seconds=float(entry["seconds"]),
                diagnostics=dict(entry["diagnostics"]),
                trajectory=list(entry["trajectory"]),
                digest=actual,
            )
        except Exception as err:  # truncated, corrupt, or written by something else
            warnings.warn(f"cache file {path} is unreadable ({type(err).__name__}: {err}); retraining it", CacheWarning, stacklevel=2)
            return None

    def save(self, task: Task, seed: int, role: str, model: torch.nn.Module, test_acc: float, seconds: float, diagnostics: dict, trajectory: list) -> None:
        """Write an entry; a folder that cannot be written is reported once (CacheWarning) and
        no further write is tried, since the run itself does not need the cache."""
        if self.folder is None or not self.writable:
            return
        key = self.key(task, seed, role)
        state = {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}
        entry = {
            "key": key,
            "digest": state_digest(state),
            "state": state,
            "test_acc": float(test_acc),
            "seconds": float(seconds),
            "diagnostics": diagnostics,
            "trajectory": trajectory,
        }
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            os.close(fd)
            torch.save(entry, tmp)
            os.replace(tmp, self.path(key))
        except (OSError, RuntimeError) as err:  # a file, read-only, a full disk (torch reports RuntimeError)
            self._unwritable(err)
        finally:
            if tmp is not None and os.path.exists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _unwritable(self, err: Exception) -> None:
        self.writable = False
        self._report_once(
            f"cannot write the donor cache {str(self.folder)!r} ({_why_unwritable(self.folder, err)}); going on without "
            "saving donors there (entries it holds are still read): pass a writable --cache-dir, or --no-cache"
        )

    def _report_once(self, message: str) -> None:
        """One CacheWarning per folder and kind of trouble in a process (a sweep runs many
        units, each with its own DonorCache)."""
        mark = (str(self.folder), message.split(" (", 1)[0])
        if mark in _REPORTED:
            return
        _REPORTED.add(mark)
        warnings.warn(message, CacheWarning, stacklevel=4)


def _why_unwritable(folder: Path, err: Exception) -> str:
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            return f"{str(path)!r} is a file, not a folder"
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return " ".join(str(err).split())[:200] or type(err).__name__
