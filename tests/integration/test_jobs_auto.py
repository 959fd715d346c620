"""--jobs never changes a stored number: the same small sweep with --jobs 1 (in this process,
torch on two threads as a user's default would have it), --jobs 2 and --jobs auto (worker
processes) stores the same accuracies and the same source-model weights.

The sweep takes the per-run loop (--no-batch), where torch's thread count reaches the
arithmetic: trained on two threads instead of one, the digits source models of this sweep
get other weights (measured), so the test fails if a unit ran on torch's own setting."""

from __future__ import annotations

import pytest
import torch

from ptbench.results.store import Store
from ptbench.sweep import execute

SAME = ["status", "source_acc", "target_acc", "target_train_acc", "donor_digest", "path"]


def stored(path):
    with Store(path) as store:
        return store.frame().set_index("key").sort_index()[SAME]


@pytest.mark.slow  # three sweeps, two of them starting worker pools: ~30 s on 2 cores
def test_jobs_1_2_and_auto_store_the_same_numbers(cli, task_spec, tmp_path, monkeypatch):
    sweep = ["run", "--task", "digits-split[width=4,source_steps=30,target_steps=10]", "--task", task_spec(steps=30),
             "--strategy", "scratch", "--strategy", "full", "--strategy", "partial-layers[layers=1,freeze=true]",
             "--seeds", "2", "--no-batch", "--no-cache", "--quiet", "--no-leaderboard"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = cli(*sweep, "--jobs", "1", "--store", str(tmp_path / "one.db"))
    finally:
        torch.set_num_threads(before)
    two = cli(*sweep, "--jobs", "2", "--store", str(tmp_path / "two.db"))

    chosen = []
    monkeypatch.setattr(execute, "AUTO_MIN_SECONDS", 0.0)  # workers even for a sweep of seconds
    monkeypatch.setattr(execute, "usable_cores", lambda: 2)
    original = execute.AutoExecutor.run

    def run(self, groups, options):
        yield from original(self, groups, options)
        chosen.append(self.chose)

    monkeypatch.setattr(execute.AutoExecutor, "run", run)
    auto = cli(*sweep, "--store", str(tmp_path / "auto.db"))  # the default: --jobs auto

    assert (one.code, two.code, auto.code) == (0, 0, 0), (one.err, two.err, auto.err)
    assert chosen == ["2 workers"]
    here = stored(tmp_path / "one.db")
    assert len(here) == 12 and (here["status"] == "ok").all() and here["donor_digest"].notna().all()
    for other in ("two.db", "auto.db"):
        pytest.importorskip("pandas").testing.assert_frame_equal(stored(tmp_path / other), here)


def test_a_pool_runs_the_while_waiting_task_once_in_this_process_and_in_process_units_never():
    """`execute.while_waiting`: the command line imports the leaderboard's libraries while a
    pool's workers compute. The task runs once, in this process, only with workers busy; a
    sweep in this process (where a unit may be importing) never runs it."""
    import os

    from conftest import small_task

    from ptbench.api import RunSpec
    from ptbench.run.group import group_specs
    from ptbench.run.options import RunOptions
    from ptbench.strategies.full import Full
    from ptbench.strategies.scratch import Scratch

    task = small_task()
    specs = [RunSpec(task, strategy, seed) for seed in range(4) for strategy in (Scratch(), Full())]
    calls: list[int] = []
    with execute.while_waiting(lambda: calls.append(os.getpid())):
        results = list(execute.ProcessExecutor(2).run(group_specs(specs), RunOptions(batched=False)))
    assert len(results) == 8 and all(r.status == "ok" for r in results)
    assert calls == [os.getpid()]
    with execute.while_waiting(lambda: calls.append(-1)):
        list(execute.LocalExecutor().run(group_specs(specs[:2]), RunOptions(batched=False)))
    assert calls == [os.getpid()]
