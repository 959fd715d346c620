"""Running a list of RunSpecs into a store: what is pending, in which groups, with progress.

Kept apart from `runner` (which knows how one group trains) so that executors, resume and
reporting can change without touching training, and the other way round.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from .api import RunSpec
from .executors import Executor, LocalExecutor
from .runner import RunOptions, group_specs
from .store import Store


@dataclass
class SweepReport:
    total: int
    skipped: int
    statuses: Counter = field(default_factory=Counter)

    @property
    def ran(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "ok")

    def summary(self) -> str:
        parts = [f"{self.ran} run(s) done", f"{self.skipped} already stored"]
        parts += [f"{n} {status}" for status, n in sorted(self.statuses.items()) if status != "ok"]
        return ", ".join(parts)


def pending(specs: list[RunSpec], store: Store, force: bool = False, retry_failed: bool = False) -> list[RunSpec]:
    """The specs to run: all with --force; else those not stored (and failed ones on retry)."""
    if force:
        return list(specs)
    stored = store.statuses()
    return [s for s in specs if s.key not in stored or (retry_failed and stored[s.key] != "ok")]


def run_sweep(
    specs: list[RunSpec],
    store: Store,
    options: RunOptions = RunOptions(),
    force: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> SweepReport:
    todo = pending(specs, store, force, retry_failed)
    report = SweepReport(total=len(specs), skipped=len(specs) - len(todo))
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 5.0)

    executor = executor or LocalExecutor()
    try:
        for result in executor.run(group_specs(todo), options):
            store.write(result)
            report.statuses[result.status] += 1
            bar.update(1)
            bar.set_postfix_str(f"{result.task[:40]} seed {result.seed}", refresh=False)
            if result.status != "ok":
                bar.write(f"{result.status}: {result.task} / {result.strategy} / seed {result.seed}: {result.error}")
    finally:
        bar.close()
    return report
