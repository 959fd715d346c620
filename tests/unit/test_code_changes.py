"""Results that know their code: editing a strategy makes the next run re-run its runs, and
the summary says so; runs of untouched strategies stay stored."""

from __future__ import annotations

import os
import time

from ptbench.results.store import Store

PLUGIN = '''
from ptbench.api import Strategy, TransferPlan


class Edited(Strategy):
    """Copy every transferable layer (an edited copy of full)."""

    name = "edited"

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)
'''


def test_editing_a_strategy_reruns_its_runs_and_says_so(cli, tmp_path, task_spec):
    plugin = tmp_path / "edited.py"
    plugin.write_text(PLUGIN)
    args = ["run", "--task", task_spec(), "--strategy", "scratch", "--strategy", "edited", "--seeds", "2",
            "--plugin", str(plugin), "--quiet", "--no-cache"]
    first = cli(*args)
    assert first.code == 0, first.err
    assert "4 run(s) done, 0 already stored" in first.err
    assert "0 run(s) done, 4 already stored" in cli(*args).err

    plugin.write_text(PLUGIN + "\n# the contributor changed the code\n")
    later = time.time() + 5
    os.utime(plugin, (later, later))
    again = cli(*args)
    assert again.code == 0, again.err
    assert "2 run(s) done (2 re-run because their plugin code changed or was never recorded), 2 already stored" in again.err
    with Store(tmp_path / "results" / "adhoc.db") as store:
        hashes = store.frame().groupby("strategy")["plugin_hash"].nunique()
    assert set(hashes) == {1}  # every row carries the hash of the code that made it


def test_runs_stored_without_a_code_hash_are_rerun(cli, tmp_path, task_spec):
    args = ["run", "--task", task_spec(), "--strategy", "scratch", "--seeds", "1", "--quiet", "--no-cache"]
    assert cli(*args).code == 0
    with Store(tmp_path / "results" / "adhoc.db") as store:
        store.conn.execute("UPDATE runs SET plugin_hash = NULL")  # as a store from before schema 3
    assert "1 run(s) done (1 re-run because" in cli(*args).err
