"""Harness settings that are not part of a run's identity, and the device they name."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PtbenchError


@dataclass(frozen=True)
class RunOptions:
    """How runs are executed; changing these never changes what a run is (its store key)."""

    device: str = "cpu"
    timeout: float | None = None  # seconds per target run (the source model has its own)
    #: Where trained donors are cached (None: no cache). The CLI's default is .ptbench-cache.
    cache_dir: str | None = None
    #: Train the runs a task's batched engine supports as one program (False: all per-run).
    batched: bool = True
    #: The most runs one batched program holds (bounds memory: each seed's data stays in it).
    max_batch_runs: int = 256


def resolve_device(name: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a device this torch can use, or a PtbenchError."""
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
