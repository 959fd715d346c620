"""Where groups run: in this process, in worker processes, or on a dask cluster.

An executor takes groups and yields RunResults as they finish; the caller (sweep) writes them
to the store, so the store has a single writer per `ptbench run` whatever runs the groups.
Backends beyond the local one import their dependencies lazily.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol

from .api import RunResult
from .runner import Group, RunOptions, run_group


class Executor(Protocol):
    def run(self, groups: list[Group], options: RunOptions) -> Iterator[RunResult]: ...


class LocalExecutor:
    """Groups one after another in this process; each result streams out as it finishes."""

    def run(self, groups: Iterable[Group], options: RunOptions) -> Iterator[RunResult]:
        for group in groups:
            yield from run_group(group, options)
